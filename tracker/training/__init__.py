"""Training: models, their checkpoints and directions (rows, task kinds, command line).

Nothing is imported here, so `tracker --help` loads only the ``cli`` module's parsers.
"""
