"""The regression config: :class:`RegressConfig`, its named presets and its "does not apply" rules.

Registered with :func:`nndl.base.config.register` on import (``nndl.tasks`` imports this module),
so ``resolve("regress", ...)``, ``nndl presets`` and the report know the task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nndl.base.config import TrainConfig, _choice, _doc, _list, register


@dataclass
class RegressConfig(TrainConfig):
    """Regression of a target column on numeric input columns with K-fold CV."""

    # "bundled:NAME" is a file shipped inside nndl (found wherever nndl is installed); test_path "" = no test set
    train_path: str = "bundled:regression_train.csv"
    test_path: str = "bundled:regression_test.csv"
    x_cols: list[str] = _list([], "input columns by name (default: all but the last)")
    y_col: str = _doc("", "target column by name (default: the last)")
    hidden: list[int] = _list([128, 256], "hidden layer widths, any depth")
    activation: str = _choice("sigmoid", ["sigmoid", "tanh", "relu", "gelu"])
    init: str = _choice("default", ["default", "xavier", "kaiming"])
    dropout: float = _doc(0.0, "dropout after each hidden layer")
    folds: int = _doc(5, "K of the K-fold cross-validation")
    final: str = _choice("refit", ["refit", "ensemble"], "refit on all data, or average the fold models")
    batched: bool = _doc(True, "train the K fold models as one stacked model (same maths, fewer kernel launches)")
    standardize: bool = _doc(False, "scale inputs/targets with training-set mean/std")
    probe_inputs: list[float] = _list([-4.0, -2.0, 0.1, 2.5, 4.0], "inputs for activation profiles")
    splitter: str = _choice("kfold", ["kfold", "blocked", "cluster"],
                            "CV folds: shuffled, contiguous blocks of sorted x (block_col), or leave one "
                            "cluster out (clusters split at gaps in x, or given by group_col)")
    block_col: str = _doc("", "input column that splitter=blocked sorts along (time, position, ...); needed "
                              "with several input columns, default the only one")
    group_col: str = _doc("", "column of group labels for splitter=cluster (not an input); empty = find clusters in x")
    search: str = _choice("none", ["none", "auto"], "auto: built-in search scored by the splitter's CV, "
                                                     "then an ensemble of the best configs (preset auto)")
    ensemble_top: int = _doc(4, "search=auto: configs in the final ensemble (each with its fold models)")
    threads: int = _doc(0, "torch intra-op threads while training; 0 = 1 for tiny nets, else torch's default")
    reference: str = _choice("auto", ["auto", "gp", "ridge", "none"],
                             "baseline fitted beside the net (needs scikit-learn): auto = a Gaussian process for "
                             "one input column, ridge for several; none = off (--no-reference)")
    interval: str = _choice("model", ["model", "cv_plus"],
                            "90% interval: model = members' spread plus noise; cv_plus = conformal CV+ from the "
                            "fold models' held-out residuals (coverage >= 80% guaranteed, ~90% in practice, for "
                            "exchangeable data; see docs/regression_vs_gp.md)")
    lr: float = 0.02
    weight_decay: float = 1e-5
    epochs: int = 600
    batch_size: int = 256


    def range_checks(self) -> list[tuple[str, bool, str]]:
        return [("folds", self.folds >= 2, "must be >= 2"),
                ("hidden", all(h >= 1 for h in self.hidden), "sizes must be >= 1"),
                ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
                ("ensemble_top", self.ensemble_top >= 1, "must be >= 1"), ("threads", self.threads >= 0, "must be >= 0")]


# Presets are small dicts of overrides on top of the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # The reference notebook's network and training, unchanged.
    "seed": {},
    # Chosen by bench/regress_presets.py (96 configs, 5-fold CV on the training set only): the
    # top five by validation MSE are within noise of each other; this one has the smallest
    # fold-to-fold spread. GELU + standardised inputs/targets + stronger L2 fill the gaps smoothly.
    "smooth": {"activation": "gelu", "lr": 0.005, "weight_decay": 1e-3, "standardize": True},
    # A built-in search (nndl.tasks.regress.task.AUTO_SPACE: smooth activations x widths/depths x L2 x lr, on
    # standardised x/y) scored by blocked CV, whose held-out blocks are gaps in miniature; the final
    # model is the ensemble of the best configs' fold models, with a calibrated 90% interval.
    # Chosen by bench/regression_suite.py (generated gap problems), not on one test set.
    "auto": {"search": "auto", "splitter": "blocked", "final": "ensemble", "standardize": True},
}


def not_applicable(config: dict) -> dict[str, str]:
    """The regression keys of ``config`` (a saved config dict) that the run never read, with the reason."""
    out: dict[str, str] = {}
    if config.get("search", "none") != "auto":
        out["ensemble_top"] = f"only search=auto builds an ensemble of the best configs (search {config.get('search')})"
    if config.get("splitter", "kfold") != "cluster":
        out["group_col"] = f"only splitter=cluster reads group labels (splitter {config.get('splitter')})"
    if config.get("splitter", "kfold") != "blocked":
        out["block_col"] = f"only splitter=blocked sorts along a column (splitter {config.get('splitter')})"
    return out


register("regress", RegressConfig, PRESETS, not_applicable)
