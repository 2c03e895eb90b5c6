"""scikit-learn estimators (``NNRegressor``, ``NNClassifier``): the public import path.

The code lives in :mod:`nndl.tools.sklearn`; this module keeps ``from nndl.sklearn import
NNClassifier`` stable for users while the package tree is free to change.
"""
from nndl.tools.sklearn import FitDivergedError, NNClassifier, NndlValueError, NNRegressor

__all__ = ["NNRegressor", "NNClassifier", "NndlValueError", "FitDivergedError"]
