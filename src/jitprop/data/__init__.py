"""Data and file formats: checking arrays, reading data sets and ``.npz`` files, checkpoints, run files."""
