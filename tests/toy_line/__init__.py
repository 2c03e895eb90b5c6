"""A toy task for the tutorial in docs/architecture.md: a straight line y = w x + b fitted by the engine.

It lives in the tests on purpose: adding it touches no module of ``src/nndl`` -- one package (this
one: ``config`` and ``task``) and one registry line (``nndl.tasks.TASK_MODULES``).
"""
