"""nndl.sklearn.GridSearchCV / RandomizedSearchCV are scikit-learn's searches with the fits trained as one stack.

The reference is scikit-learn's own search over the same NNClassifier: the same cv_results_ keys,
the same per-candidate scores (within one test row per fold; measured: identical), the same
ranking, best_params_ and refit. Where the candidates cannot stack, scikit-learn's loop runs.
"""
import inspect
import warnings

import numpy as np
import pytest
import torch
from sklearn import model_selection as skms

import nndl.sklearn as ns

BASE = {"hidden": [32], "batch_size": 64, "random_state": 0}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def same_search(ours, theirs, n_test: int):
    assert set(ours.cv_results_) == set(theirs.cv_results_)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"],
                               atol=1.0 / n_test, rtol=0)
    for j in range(ours.n_splits_):
        np.testing.assert_allclose(ours.cv_results_[f"split{j}_test_score"],
                                   theirs.cv_results_[f"split{j}_test_score"], atol=1.0 / n_test, rtol=0)
    assert list(ours.cv_results_["rank_test_score"]) == list(theirs.cv_results_["rank_test_score"])
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_, abs=1.0 / n_test)


def test_grid_search_equals_scikit_learns(digits):
    X, y = digits
    grid = {"lr": [0.003, 0.02], "epochs": [2, 4], "patience": [0, 2]}
    est = ns.NNClassifier(**BASE)
    rng = torch.get_rng_state()
    ours = ns.GridSearchCV(est, grid, cv=3).fit(X, y)
    assert torch.equal(torch.get_rng_state(), rng)  # initialising the stack left the caller's RNG alone
    theirs = skms.GridSearchCV(est, grid, cv=3).fit(X, y)
    # 24 fits, 18 trained: with patience 0 and a constant lr the 2-epoch fits are the first epochs of the 4-epoch
    # ones (epoch-prefix sharing), and still score exactly as scikit-learn's separate fits
    assert ours.fallback_reason_ is None and ours.stack_sizes_ == [(2 + 4) * 3]
    same_search(ours, theirs, len(X) // 3)
    # every fit was served by the stack: its fit time is the stack's share (see nndl.tools.search_cv)
    assert len(set(ours.cv_results_["mean_fit_time"])) == 1 and not ours.cv_results_["std_fit_time"].any()
    assert type(ours.best_estimator_) is ns.NNClassifier
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.score(X, y) == theirs.score(X, y)


def test_randomized_search_equals_scikit_learns_with_string_labels(digits):
    from scipy.stats import loguniform

    X, y = digits
    X, y = X[:900], np.array(["zero one two three four five six seven eight nine".split()[v] for v in y[:900]])
    space = {"lr": loguniform(1e-3, 3e-2), "weight_decay": [0.0, 1e-3], "label_smoothing": [0.0, 0.1]}
    est = ns.NNClassifier(**BASE, epochs=3)
    ours = ns.RandomizedSearchCV(est, space, n_iter=3, cv=3, random_state=0, scoring="accuracy").fit(X, y)
    theirs = skms.RandomizedSearchCV(est, space, n_iter=3, cv=3, random_state=0, scoring="accuracy").fit(X, y)
    assert ours.fallback_reason_ is None and ours.stack_sizes_ == [9]
    same_search(ours, theirs, len(X) // 3)
    assert set(ours.predict(X[:20])) <= set(y)


def test_randomized_search_without_random_state_scores_the_candidates_it_trained(digits):
    X, y = digits
    est = ns.NNClassifier(**{**BASE, "random_state": None}, epochs=2)
    search = ns.RandomizedSearchCV(est, {"lr": [1e-3, 3e-3, 1e-2, 3e-2]}, n_iter=2, cv=2).fit(X[:600], y[:600])
    assert search.stack_sizes_ == [4] and np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert len(set(search.cv_results_["mean_fit_time"])) == 1  # all four fits came from the stack


def test_a_search_the_stack_cannot_hold_is_scikit_learns_loop(digits):
    from sklearn.linear_model import LogisticRegression

    X, y = digits
    X, y = X[:600], y[:600]
    grid = {"hidden": [[16], [32]]}  # changes the network: no stack
    est = ns.NNClassifier(**BASE, epochs=2)
    ours = ns.GridSearchCV(est, grid, cv=2).fit(X, y)
    assert "hidden" in ours.fallback_reason_ and ours.stack_sizes_ == []
    same_search(ours, skms.GridSearchCV(est, grid, cv=2).fit(X, y), len(X) // 2)
    lr = ns.GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, cv=2).fit(X, y)
    assert "LogisticRegression" in lr.fallback_reason_
    np.testing.assert_allclose(lr.cv_results_["mean_test_score"], skms.GridSearchCV(
        LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, cv=2).fit(X, y).cv_results_["mean_test_score"])
    images = np.repeat(np.repeat(X[:200].reshape(-1, 8, 8), 2, 1), 2, 2).reshape(200, 256)  # 16x16 for the cnn
    cnn = ns.GridSearchCV(ns.NNClassifier(model="cnn", channels=[4, 4, 4], epochs=1, random_state=0),
                          {"lr": [0.01]}, cv=2)
    assert "model = 'cnn'" in cnn.fit(images, y[:200]).fallback_reason_


def test_a_diverging_candidate_is_a_failed_fit_never_ranked_first(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    grid = {"lr": [0.01, 1e6]}
    est = ns.NNClassifier(**BASE, epochs=2, optimizer="sgd", momentum=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ns.GridSearchCV(est, grid, cv=2).fit(X, y)
        theirs = skms.GridSearchCV(est, grid, cv=2).fit(X, y)
    assert ours.fallback_reason_ is None
    assert np.isnan(ours.cv_results_["mean_test_score"][1]) and np.isnan(theirs.cv_results_["mean_test_score"][1])
    assert ours.best_params_ == theirs.best_params_ == {"lr": 0.01}
    assert list(ours.cv_results_["rank_test_score"]) == list(theirs.cv_results_["rank_test_score"])


def test_bad_parameter_names_are_refused_as_scikit_learn_refuses_them(digits):
    X, y = digits
    est = ns.NNClassifier(**BASE, epochs=1)
    with pytest.raises(ValueError) as theirs:
        skms.GridSearchCV(est, {"lrr": [0.1]}, cv=2).fit(X[:100], y[:100])
    with pytest.raises(ValueError) as ours:
        ns.GridSearchCV(est, {"lrr": [0.1]}, cv=2).fit(X[:100], y[:100])
    assert str(ours.value) == str(theirs.value) and "lrr" in str(ours.value)
    with pytest.raises(ValueError, match="n_iter"):  # the search's own arguments: scikit-learn's checks
        ns.RandomizedSearchCV(est, {"lr": [0.1]}, n_iter=0, cv=2).fit(X[:100], y[:100])


def test_the_scikit_learn_internals_used_are_still_there():
    """search_cv relies on BaseSearchCV calling _run_search(evaluate_candidates, callback_ctx=...) (1.9.x)
    and on _validate_params; a scikit-learn release that changes them must fail here, not in a search."""
    params = inspect.signature(skms.GridSearchCV._run_search).parameters
    assert "callback_ctx" in params and "callback_ctx" in inspect.signature(ns.GridSearchCV._run_search).parameters
    assert callable(getattr(skms.GridSearchCV, "_validate_params", None))
    assert ns.GridSearchCV.__mro__[2] is skms.GridSearchCV
    assert str(inspect.signature(ns.GridSearchCV.__init__)) == str(inspect.signature(skms.GridSearchCV.__init__))


def test_a_one_shot_iterator_of_splits_is_left_to_scikit_learn(digits):
    from sklearn.model_selection import StratifiedKFold

    X, y = digits
    X, y = X[:300], y[:300]
    est = ns.NNClassifier(**BASE, epochs=1)
    splits = StratifiedKFold(2).split(X, y)  # a generator: scikit-learn reads it once
    search = ns.GridSearchCV(est, {"lr": [0.01]}, cv=splits).fit(X, y)
    assert "one-shot" in search.fallback_reason_ and np.isfinite(search.best_score_)
    listed = ns.GridSearchCV(est, {"lr": [0.01]}, cv=list(StratifiedKFold(2).split(X, y))).fit(X, y)
    assert listed.fallback_reason_ is None and listed.best_score_ == pytest.approx(search.best_score_, abs=1 / 150)


def test_multimetric_scoring_train_scores_and_no_refit_as_scikit_learn(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    kw = dict(cv=2, scoring={"acc": "accuracy", "bal": "balanced_accuracy"}, refit="bal", return_train_score=True)
    est = ns.NNClassifier(**BASE, epochs=2)
    ours = ns.GridSearchCV(est, {"lr": [0.003, 0.02]}, **kw).fit(X, y)
    theirs = skms.GridSearchCV(est, {"lr": [0.003, 0.02]}, **kw).fit(X, y)
    assert ours.fallback_reason_ is None and set(ours.cv_results_) == set(theirs.cv_results_)
    for key in ("mean_test_acc", "mean_test_bal", "mean_train_acc", "rank_test_bal"):
        np.testing.assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1 / 300)
    assert ours.best_params_ == theirs.best_params_
    bare = ns.GridSearchCV(est, {"lr": [0.003, 0.02]}, cv=2, refit=False).fit(X, y)
    assert not hasattr(bare, "best_estimator_") and bare.best_params_ == skms.GridSearchCV(
        est, {"lr": [0.003, 0.02]}, cv=2, refit=False).fit(X, y).best_params_
