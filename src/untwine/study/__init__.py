"""Studies: the reference's hyperparameter grids as presets (grid.py)."""
