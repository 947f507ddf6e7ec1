"""Loss surfaces (Li et al. 2018): 1D/2D grids around a model and interpolations between two,
their tiles, figures and exchange formats (Goldstein h5, ParaView vtp, csv).

Nothing is imported here, so `tracker --help` loads only the ``cli`` module's parsers.
"""
