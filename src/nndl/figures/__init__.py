"""Figures of a run, written as PNG files into the run folder's ``figures/``."""
