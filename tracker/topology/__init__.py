"""Jump-and-retrain topology (Horoi et al. 2022): retrains from a trained model, their PHATE
embedding and the persistent homology of a loss over it.

Nothing is imported here, so `tracker --help` loads only the ``cli`` module's parsers.
"""
