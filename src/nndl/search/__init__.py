"""Hyperparameter search with Optuna: K-fold objective, search-space files, storage and workers.

Nothing fails silently. A trial whose loss turned NaN/inf, that raised, or that hit
``--timeout-per-trial`` ends as FAIL with its reason in the ``fail_reason`` user
attribute; it is never ranked. When most trials fail the summary says so loudly and
``ok`` is False (the CLI exits with 3).

``--trials`` is the total for the study, across all workers and reruns: a process
claims a trial under a lock (a file lock next to the journal or the SQLite file, a
PostgreSQL advisory lock, a lock row in any other database), so parallel workers never
overshoot. A trial lost with its worker (SIGKILL, power cut) is failed -- by heartbeat on
a database, by a dead-PID check for the local journal -- and retried once; the lost
attempt does not count.

Modules, in the order a search uses them:

- :mod:`.options` -- :class:`TuneOptions` (what ``tune`` is asked) and :class:`~.options.Plan` (what it resolved to)
- :mod:`.space` -- search-space files: parsing, validation, sampling a trial's values
- :mod:`.objective` -- the K-fold objective, pruning, FAIL reasons, batched (stacked) trials
- :mod:`.folder` -- the study folder and the settings a resumed study must keep
- :mod:`.storage` -- checking and opening the storage (journals validated, never written when damaged),
  the trial lock of every backend, recovering lost trials
- :mod:`.workers` -- the claim-and-run loop, local worker processes, their signals
- :mod:`.outputs` -- trials.csv, the trial table, best_preset.toml, the retrained best run, study.json
- :mod:`.optuna_shim` -- every private Optuna symbol the search uses, behind one small module
- :mod:`.tuning` -- :func:`tune`, which composes the above
"""
from nndl.search.folder import study_settings
from nndl.search.objective import Objective, TrialFailed
from nndl.search.options import Plan, TuneOptions
from nndl.search.outputs import to_toml
from nndl.search.space import Space, check_space_values, load_space, suggest
from nndl.search.storage import _alive, driver_url, mask_url, open_storage, trial_lock  # noqa: F401 (_alive: tests)
from nndl.search.tuning import tune

__all__ = ["tune", "TuneOptions", "Plan", "Space", "load_space", "check_space_values", "suggest",
           "Objective", "TrialFailed", "study_settings", "to_toml", "mask_url", "driver_url", "open_storage",
           "trial_lock"]
