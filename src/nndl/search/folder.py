"""The study folder: its ``tune.json`` marker and the settings a resumed study must keep."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.runfolder.files import prepare_out_dir, read_json, write_json, write_marker
from nndl.search.options import NOT_IN_PRESET
from nndl.search.space import Space
from nndl.search.storage import mask_url

# What nndl tune writes into a study folder: outputs never replace these (nndl.runfolder.files.check_output), and
# a run's --overwrite never replaces a study folder.
STUDY_FILES = ("tune.json", "journal.log", "study.json", "trials.csv", "best_preset.toml", "report.html",
               "figures/*", "best/*", "worker-*.log")


def study_settings(sp: Space, preset: str, overrides, seed: int | None, folds: int) -> dict[str, Any]:
    """What the scores of a study depend on, as stored in ``tune.json``: a study resumed with other
    settings would rank trials that were scored differently."""
    values = {k: (",".join(map(str, v)) if isinstance(v, list) else str(v))
              for k, v in config_mod.parse_overrides(overrides).items() if k not in NOT_IN_PRESET}
    return {"space": {"preset": sp.preset, "fixed": sp.fixed, "params": sp.params, "grid": sp.grid},
            "preset": preset, "overrides": values, "seed": seed, "folds": folds}


def study_folder(out, task, study, sp, storage, need: bool, create: bool, settings: dict[str, Any],
                 allow_changes: bool = False) -> tuple[Path | None, str]:
    """The study folder and name; a folder holding another study, or this study started with other
    settings (space, preset, overrides, seed, folds), is never reused silently.

    ``need``: the storage lives in the folder (the journal); ``create``: a new folder may be made
    (not for ``--worker-only``).
    """
    if out is None:
        if not create:
            if need:
                raise NndlError("--worker-only with the journal storage needs --out (the study folder)")
            return None, study or f"{task}-{sp.path.stem}"
        out = _fresh_folder(task)
    folder = Path(out)
    if (folder / "tune.json").exists():
        return folder, _resume(folder, task, study, settings, allow_changes)
    if folder.exists() and any(folder.iterdir()):
        raise NndlError(f"--out {folder}: folder exists and is not a study folder; choose another --out")
    prepare_out_dir(folder)
    name = study or f"{task}-{sp.path.stem}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_marker(folder, "study", state="training", writes=STUDY_FILES)
    except OSError as e:
        raise NndlError(f"--out {folder}: cannot create it ({e.strerror}); choose a folder you can write to") from None
    write_json(folder / "tune.json", {"study": name, "task": task, "space": str(sp.path),
                                      "storage": mask_url(storage), "settings": settings})
    return folder, name


def _fresh_folder(task: str) -> Path:
    """``runs/tune-TASK-TIMESTAMP``, with ``-2``, ``-3``... when that exists."""
    out = base = Path("runs") / f"tune-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


def _resume(folder: Path, task: str, study: str | None, settings: dict[str, Any], allow_changes: bool) -> str:
    """The name of the study in ``folder``, if it is this task's and was started with these settings."""
    meta = read_json(folder / "tune.json")
    if (study and study != meta["study"]) or task != meta["task"]:
        raise NndlError(f"--out {folder}: holds the {meta['task']} study '{meta['study']}'; rerun with "
                        f"--study {meta['study']} to resume it, or choose another --out")
    started = json.loads(json.dumps(meta.get("settings", settings)))  # JSON round trip: tuples -> lists
    changed = [k for k in settings if k in started and started[k] != json.loads(json.dumps(settings[k]))]
    if changed and not allow_changes:
        raise NndlError(f"--out {folder}: study '{meta['study']}' was started with another "
                        f"{' and '.join(changed)}; rerun with its settings (tune.json) to resume it, choose "
                        "another --out for a new study, or add --allow-changes to mix them knowingly")
    return meta["study"]
