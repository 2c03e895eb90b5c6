"""The regression task (its run: :mod:`nndl.tasks.regress.task`)."""

#: The task's name: its config, presets, run folders and ``nndl regress`` command (known without importing the task).
NAME = "regress"
