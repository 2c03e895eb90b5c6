"""scikit-learn estimators (``NNRegressor``, ``NNClassifier``) and searches (``GridSearchCV``,
``RandomizedSearchCV``, whose NNClassifier fits train as one stack): the public import path.

The code lives in :mod:`nndl.tools.sklearn`; this module keeps ``from nndl.sklearn import
NNClassifier`` stable for users while the package tree is free to change.
"""
from nndl.tools.search_cv import GridSearchCV, RandomizedSearchCV
from nndl.tools.sklearn import FitDivergedError, NNClassifier, NndlValueError, NNRegressor

__all__ = ["NNRegressor", "NNClassifier", "NndlValueError", "FitDivergedError", "GridSearchCV", "RandomizedSearchCV"]
