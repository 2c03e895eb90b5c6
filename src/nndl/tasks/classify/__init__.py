"""The classification task (its run: :mod:`nndl.tasks.classify.task`)."""

#: The task's name: its config, presets, run folders and ``nndl classify`` command (known without importing the task).
NAME = "classify"
