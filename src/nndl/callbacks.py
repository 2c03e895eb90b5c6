"""Callbacks for ``nndl.regress``/``nndl.classify``/``nndl.train``: the public import path.

The code lives in :mod:`nndl.training.callbacks`; this module keeps ``from nndl.callbacks import
EarlyStopping`` stable for users while the package tree is free to change.
"""
from nndl.training.callbacks import (Callback, CallbackList, CSVLogger, EarlyStopping, ProgressBar, RunInfo,
                                     StackMemberState, TensorBoard, TrainState)

__all__ = ["Callback", "CallbackList", "CSVLogger", "EarlyStopping", "ProgressBar", "RunInfo", "StackMemberState",
           "TensorBoard", "TrainState"]
