"""Prototype regression recipes that aim to beat a Gaussian process (issue 22), as suite strategies.

Everything here is a neural network: stacks of small MLPs trained full batch in plain torch
(one batched forward for all members), on standardised inputs and targets. The levers a
strategy combines:

* the network's prior in the gaps: activation, width, depth, L2 strength (in standardised units);
* how the L2 strength / network is chosen: out-of-fold MSE of a shuffled or blocked K-fold;
* the readout: the trained last layer, or a Bayesian last layer (ridge regression on the last
  hidden layer's features with prior and noise precision maximising the evidence, MacKay's
  updates as in scikit-learn's BayesianRidge), which gives every member a predictive variance;
* the ensemble: the K fold models of every chosen config (CV bagging), weighted equally;
* the interval for a new observation: the ensemble's mixture variance (members' spread plus
  their predictive variances) with a scale fitted on out-of-fold points, or split-free
  conformal (CV+, Barber et al. 2021) on the fold models' out-of-fold residuals, optionally
  normalised by each point's predictive standard deviation.

A recipe is ``fit_recipe(x, y, Recipe(...)) -> FittedRecipe``; ``.predict(xt)`` gives the
centre and the 90% interval. ``STRATEGIES`` exposes the variants measured in
docs/regression_vs_gp.md to bench/regression_suite.py.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from nndl.nn import intervals as uncertainty

ACTIVATIONS = {"tanh": torch.tanh, "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid,
               "relu": torch.relu, "sin": torch.sin, "silu": torch.nn.functional.silu}


@dataclass(frozen=True)
class Net:
    """One network shape: activation, hidden widths, and the first layer's weight scale
    (``init_scale`` multiplies PyTorch's default uniform(+-1/sqrt(fan_in)) on that layer:
    larger = shorter length scales in the prior)."""

    activation: str = "tanh"
    hidden: tuple[int, ...] = (64, 64)
    init_scale: float = 1.0


@dataclass(frozen=True)
class Recipe:
    """Every hyperparameter of a recipe (see the module notes); defaults are the winning recipe's."""

    nets: tuple[Net, ...] = (Net("tanh", (32, 32)), Net("tanh", (64, 64)))
    weight_decays: tuple[float, ...] = (1e-3,)  # L2 on hidden weight matrices, standardised units
    seeds: int = 3  # members per (net, weight decay, fold)
    folds: int = 5
    splitter: str = "kfold"  # "kfold" (shuffled) or "blocked" (contiguous blocks of sorted x)
    top: int = 2  # configs (net x weight decay) kept, by out-of-fold MSE (2 = all of them)
    epochs: int = 1000
    lr: float = 0.01
    loss: str = "evidence"  # "mse", "huber" (robust to gross outliers) or "evidence" (type-II ML of the last layer)
    losses: tuple[str, ...] = ()  # several training objectives as candidate configs (ranked by OOF MSE); () = (loss,)
    readout: str = "bayes"  # "trained" or "bayes" (evidence-maximised Bayesian last layer)
    center: str = "folds"  # "folds": the fold models' average (CV bagging); "full": as many members on all rows
    interval: str = "scaled"  # "scaled" (mixture variance x OOF-fitted scale) or "cvplus" / "cvplus-norm"
    level: float = 0.9
    seed: int = 0


# --- a stack of MLPs trained full batch ------------------------------------------------------------


class MemberStack:
    """``M`` MLPs of one shape as batched weights (M, fan_in, fan_out); member m trains on rows with
    ``mask[m] = 1`` and has its own L2 strength."""

    def __init__(self, net: Net, in_features: int, members: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        sizes = [in_features, *net.hidden, 1]
        self.act = ACTIVATIONS[net.activation]
        self.weights, self.biases = [], []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = (net.init_scale if i == 0 else 1.0) / math.sqrt(a)
            self.weights.append(((torch.rand(members, a, b, generator=gen) * 2 - 1) * bound).requires_grad_())
            bias_bound = (net.init_scale if i == 0 else 1.0) / math.sqrt(a)
            self.biases.append(((torch.rand(members, 1, b, generator=gen) * 2 - 1) * bias_bound).requires_grad_())

    def parameters(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer of every member: (M, N, H)."""
        h = x.unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = self.act(torch.baddbmm(b, h, w))
        return h

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's prediction: (M, N)."""
        return torch.baddbmm(self.biases[-1], self.features(x), self.weights[-1]).squeeze(-1)

    def l2(self) -> torch.Tensor:
        """Per member: the sum of squared weights (not biases)."""
        return sum((w ** 2).sum((1, 2)) for w in self.weights)


def neg_log_evidence(phi: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, log_alpha: torch.Tensor,
                     log_beta: torch.Tensor) -> torch.Tensor:
    """Per member: minus the log marginal likelihood per training row of a Bayesian linear readout
    (features ``phi`` (M, N, H) plus an intercept column; prior precision ``alpha``, noise precision
    ``beta``; Bishop, PRML eq. 3.86) on the rows with ``mask = 1``. Differentiable in the features,
    so the network's hidden layers can be trained by the evidence (type-II maximum likelihood)."""
    m_, n_, h_ = phi.shape
    design = torch.cat([phi, torch.ones(m_, n_, 1)], -1) * mask[..., None]
    target = y[None, :] * mask
    n = mask.sum(1)
    alpha, beta = log_alpha.exp(), log_beta.exp()
    gram = design.transpose(1, 2) @ design
    eye = torch.eye(h_ + 1).expand(m_, -1, -1)
    chol = torch.linalg.cholesky(alpha[:, None, None] * eye + beta[:, None, None] * gram)
    rhs = (design.transpose(1, 2) @ target[..., None])
    mean = beta[:, None, None] * torch.cholesky_solve(rhs, chol)
    resid = target - (design @ mean).squeeze(-1)
    energy = 0.5 * beta * (resid ** 2).sum(1) + 0.5 * alpha * (mean.squeeze(-1) ** 2).sum(1)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
    log_evidence = (0.5 * (h_ + 1) * log_alpha + 0.5 * n * log_beta - energy - 0.5 * log_det
                    - 0.5 * n * math.log(2 * math.pi))
    return -log_evidence / n


def train_stack(stack: MemberStack, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, weight_decay: torch.Tensor,
                epochs: int, lr: float, loss: str = "mse") -> None:
    """Full-batch Adam with a cosine decay of ``lr`` to 0; member m minimises its masked mean loss
    plus ``weight_decay[m] * l2``. Members are independent: the sum of their objectives is minimised.

    ``loss`` is ``"mse"``, ``"huber"`` (delta 1 in standardised units, scaled to match MSE near 0)
    or ``"evidence"``: the hidden layers maximise the log evidence of a Bayesian last layer
    (:func:`neg_log_evidence`, with its precisions learned alongside); the stack's own last layer
    is then unused."""
    members = len(mask)
    log_alpha = torch.zeros(members, requires_grad=True)
    log_beta = torch.zeros(members, requires_grad=True)
    extra = [log_alpha, log_beta] if loss == "evidence" else []
    opt = torch.optim.Adam(stack.parameters() + extra, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / epochs)))
    counts = mask.sum(1)
    hidden_l2 = lambda: sum((w ** 2).sum((1, 2)) for w in stack.weights[:-1])  # noqa: E731
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        if loss == "evidence":
            objective = (neg_log_evidence(stack.features(x), y, mask, log_alpha, log_beta)
                         + weight_decay * hidden_l2()).sum()
        else:
            r = stack(x) - y
            per_row = r ** 2 if loss == "mse" else 2 * torch.nn.functional.huber_loss(
                r, torch.zeros_like(r), reduction="none", delta=1.0)
            objective = ((per_row * mask).sum(1) / counts + weight_decay * stack.l2()).sum()
        objective.backward()
        opt.step()
        sched.step()


# --- the Bayesian last layer --------------------------------------------------------------------------


class EvidenceRidge:
    """Bayesian linear regression ``y = phi w + b + noise`` with prior ``w ~ N(0, 1/alpha)`` and noise
    precision ``beta``, both chosen to maximise the evidence (MacKay's fixed-point updates; Bishop,
    PRML 3.5.2). One eigendecomposition of ``phi^T phi`` makes every update a few scalar sums, so
    fitting a readout costs well under a millisecond. scikit-learn's BayesianRidge is the same model
    (it re-solves each iteration): the precisions and the mean agree to ~1e-6; the standard
    deviation here also counts the intercept's variance ``1/(beta n)``.

    ``predict(phi, return_std=True)`` gives the predictive mean and the standard deviation of a
    new observation: the noise ``1/beta`` plus the posterior variance of ``phi w + b``.
    """

    def __init__(self, max_iter: int = 300, tol: float = 1e-6):
        self.max_iter, self.tol = max_iter, tol

    def fit(self, phi: np.ndarray, y: np.ndarray) -> "EvidenceRidge":
        n = len(y)
        self.phi_mean, self.y_mean = phi.mean(0), float(y.mean())
        pc, yc = phi - self.phi_mean, y - self.y_mean
        s, v = np.linalg.eigh(pc.T @ pc)
        s = np.maximum(s, 0.0)
        z = v.T @ (pc.T @ yc)
        yy = float(yc @ yc)
        alpha, beta = 1.0, 1.0 / max(float(np.var(y)), 1e-12)
        for _ in range(self.max_iter):
            w = beta * z / (alpha + beta * s)  # posterior mean in the eigenbasis
            gamma = float(np.sum(beta * s / (alpha + beta * s)))  # effective number of parameters
            sse = max(yy - 2 * float(w @ z) + float(np.sum(s * w ** 2)), 1e-12)
            new_alpha = gamma / max(float(w @ w), 1e-12)
            new_beta = max(n - gamma, 1e-6) / sse
            done = abs(new_alpha - alpha) <= self.tol * alpha and abs(new_beta - beta) <= self.tol * beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        self.alpha_, self.beta_ = alpha, beta
        self.coef_eig_ = beta * z / (alpha + beta * s)
        self.post_var_eig_ = 1.0 / (alpha + beta * s)
        self.eigvecs_ = v
        self.n_ = n
        return self

    def predict(self, phi: np.ndarray, return_std: bool = False):
        proj = (phi - self.phi_mean) @ self.eigvecs_
        mean = proj @ self.coef_eig_ + self.y_mean
        if not return_std:
            return mean
        var = 1.0 / self.beta_ + (proj ** 2) @ self.post_var_eig_ + 1.0 / (self.beta_ * self.n_)
        return mean, np.sqrt(var)


def bayes_readout(phi: np.ndarray, y: np.ndarray) -> EvidenceRidge:
    """The evidence-maximised Bayesian last layer on features ``phi`` (N, H), with an intercept."""
    return EvidenceRidge().fit(phi, y)


# --- splits ----------------------------------------------------------------------------------------------


def fold_ids(x: np.ndarray, folds: int, kind: str, seed: int) -> np.ndarray:
    """A fold number per row: shuffled, or contiguous blocks along the first input column."""
    n = len(x)
    order = np.random.default_rng(seed).permutation(n) if kind == "kfold" else np.argsort(x[:, 0], kind="stable")
    ids = np.empty(n, dtype=int)
    for k, chunk in enumerate(np.array_split(order, folds)):
        ids[chunk] = k
    return ids


# --- the recipe -----------------------------------------------------------------------------------------


@dataclass
class Member:
    """One trained fold model of one config: the stack it lives in and its index there."""

    config: int
    fold: int
    stack: MemberStack
    index: int
    readout: object | None = None  # a fitted BayesianRidge on its features, if readout = "bayes"


@dataclass
class FittedRecipe:
    recipe: Recipe
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    members: list[Member]
    oof_scores: list[float]  # per config: out-of-fold MSE (standardised units)
    chosen: list[int]
    calib: dict = field(default_factory=dict)  # OOF residuals / scale for the interval
    configs: list[tuple[Net, float, str]] = field(default_factory=list)  # (network, weight decay, loss)

    def _std_x(self, x) -> torch.Tensor:
        return torch.as_tensor((np.asarray(x, np.float64) - self.x_mean) / self.x_std, dtype=torch.float32)

    def member_moments(self, x, members: list[Member] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each member's predictive mean and variance at ``x`` in standardised units: (M, N) each
        (variance 0 for a trained readout)."""
        xs = self._std_x(x)
        members = self.members if members is None else members
        means, variances = [], []
        cache: dict[int, tuple] = {}
        with torch.no_grad():
            for m in members:
                key = id(m.stack)
                if key not in cache:
                    cache[key] = (m.stack(xs).numpy(), m.stack.features(xs).numpy())
                out, phi = cache[key]
                if m.readout is None:
                    means.append(out[m.index].astype(np.float64))
                    variances.append(np.zeros(len(xs)))
                else:
                    mu, sd = m.readout.predict(phi[m.index].astype(np.float64), return_std=True)
                    means.append(mu)
                    variances.append(sd ** 2)
        return np.array(means), np.array(variances)

    def predict(self, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(centre, lower, upper)`` in original units for new observations at ``x``."""
        chosen = [m for m in self.members if m.config in self.chosen]
        centre_members = [m for m in chosen if (m.fold < 0) == (self.recipe.center == "full")]
        mu, var = self.member_moments(x, centre_members)
        center = mu.mean(0)
        kind = self.recipe.interval
        if kind == "scaled":
            sd = np.sqrt(self.calib["scale"] * mixture_variance(mu, var))
            half = uncertainty.z_value(self.recipe.level) * sd
            lower, upper = center - half, center + half
        else:  # CV+ works with the leave-fold-out models themselves
            fold_members = [m for m in chosen if m.fold >= 0]
            if fold_members is not centre_members and self.recipe.center == "full":
                mu, var = self.member_moments(x, fold_members)
            lower, upper = cv_plus(self.calib, fold_members, mu, var, self.recipe.level,
                                   normalised=kind == "cvplus-norm")
        unit = lambda v: v * self.y_std + self.y_mean  # noqa: E731
        return unit(center), unit(lower), unit(upper)


def mixture_variance(mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Variance of the equal-weight mixture of members N(mu_m, var_m): mean variance + spread of means."""
    spread = mu.var(0, ddof=1) if len(mu) > 1 else np.zeros(mu.shape[1])
    return var.mean(0) + spread


def cv_plus(calib: dict, members: list[Member], mu: np.ndarray, var: np.ndarray, level: float,
            normalised: bool) -> tuple[np.ndarray, np.ndarray]:
    """CV+ (Barber, Candes, Ramdas, Tibshirani 2021) with the fold ensembles as the leave-fold-out models.

    Training row i was held out of fold k(i); its residual ``R_i = |y_i - mu_{-k(i)}(x_i)|`` (or,
    normalised, divided by the fold ensemble's predictive sd at x_i). At a test point the bounds
    are the lower ``alpha`` quantile of ``mu_{-k(i)}(x) - R_i s_{-k(i)}(x)`` over i and the upper
    quantile of ``mu_{-k(i)}(x) + R_i s_{-k(i)}(x)`` (``s = 1`` unnormalised), the finite-sample
    quantiles of the paper: rank ceil((1 - alpha)(n + 1)).
    """
    folds = calib["folds"]
    fold_of = np.array([m.fold for m in members])
    fold_mu = np.stack([mu[fold_of == k].mean(0) for k in range(folds)])  # (K, N)
    fold_sd = np.stack([np.sqrt(mixture_variance(mu[fold_of == k], var[fold_of == k])) for k in range(folds)])
    r = calib["norm_residuals"] if normalised else calib["residuals"]  # (n,)
    k_of_row = calib["row_fold"]  # (n,)
    scale = fold_sd[k_of_row] if normalised else 1.0  # (n, N)
    lo = fold_mu[k_of_row] - r[:, None] * scale
    hi = fold_mu[k_of_row] + r[:, None] * scale
    n = len(r)
    alpha = 1 - level
    rank = min(n, int(math.ceil((1 - alpha) * (n + 1))))  # the paper's finite-sample rank
    upper = np.sort(hi, axis=0)[rank - 1]
    lower = -np.sort(-lo, axis=0)[rank - 1]
    return lower, upper


def _fit_readouts(members: list[Member], xs: torch.Tensor, ys: np.ndarray, train_rows: dict[int, np.ndarray]) -> None:
    with torch.no_grad():
        feats = {}
        for m in members:
            if id(m.stack) not in feats:
                feats[id(m.stack)] = m.stack.features(xs).numpy().astype(np.float64)
            rows = train_rows[m.fold]
            m.readout = bayes_readout(feats[id(m.stack)][m.index][rows], ys[rows])


def fit_recipe(x: np.ndarray, y: np.ndarray, recipe: Recipe = Recipe()) -> FittedRecipe:
    """Train every config's fold models (``seeds`` per fold), score configs by out-of-fold MSE,
    keep the best ``top``, and calibrate the interval on out-of-fold points."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x_mean, x_std = x.mean(0), np.maximum(x.std(0), 1e-6)
    y_mean, y_std = float(y.mean()), max(float(y.std()), 1e-6)
    xs = torch.as_tensor((x - x_mean) / x_std, dtype=torch.float32)
    ys = (y - y_mean) / y_std
    yt = torch.as_tensor(ys, dtype=torch.float32)
    k = recipe.folds
    row_fold = fold_ids(x, k, recipe.splitter, recipe.seed)
    train_rows = {f: np.flatnonzero(row_fold != f) for f in range(-1, k)}  # -1: every row
    losses = recipe.losses or (recipe.loss,)
    configs = [(net, wd, loss) for loss in losses for net in recipe.nets for wd in recipe.weight_decays]
    members: list[Member] = []
    for ni, (net, loss) in enumerate((n, l) for l in losses for n in recipe.nets):
        # one stack per network: (weight decay, seed, fold) members
        # fold -1 = a member trained on every row (recipe.center = "full")
        fold_list = list(range(k)) + ([-1] * k if recipe.center == "full" else [])
        layout = [(ci, f) for ci, (n_, _, l_) in enumerate(configs) if (n_, l_) == (net, loss) for _ in range(recipe.seeds)
                  for f in fold_list]
        stack = MemberStack(net, x.shape[1], len(layout), recipe.seed * 1000 + ni)
        mask = torch.stack([torch.as_tensor(row_fold != f, dtype=torch.float32) for _, f in layout])
        wd = torch.tensor([configs[ci][1] for ci, _ in layout], dtype=torch.float32)
        train_stack(stack, xs, yt, mask, wd, recipe.epochs, recipe.lr, loss)
        members += [Member(ci, f, stack, j) for j, (ci, f) in enumerate(layout)]
    if recipe.readout == "bayes":
        _fit_readouts(members, xs, ys, train_rows)
    fitted = FittedRecipe(recipe, x_mean, x_std, y_mean, y_std, members, [], [], configs=configs)
    oof_mu, oof_var = _out_of_fold(fitted, x, row_fold, len(configs))  # (C, S, n) each
    scores = [float(np.mean((oof_mu[c].mean(0) - ys) ** 2)) for c in range(len(configs))]
    fitted.oof_scores = scores
    fitted.chosen = [int(i) for i in np.argsort(scores, kind="stable")[: recipe.top]]
    mu_members = np.concatenate([oof_mu[c] for c in fitted.chosen])
    var_members = np.concatenate([oof_var[c] for c in fitted.chosen])
    mu = mu_members.mean(0)
    var = mixture_variance(mu_members, var_members)  # the held-out fold's chosen members at each row
    resid = np.abs(ys - mu)
    fitted.calib = {"folds": k, "row_fold": row_fold, "residuals": resid,
                    "norm_residuals": resid / np.sqrt(np.maximum(var, 1e-12)),
                    "scale": _variance_scale(resid, var, recipe.level)}
    return fitted


def _out_of_fold(fitted: FittedRecipe, x: np.ndarray, row_fold: np.ndarray, n_configs: int):
    """Per config and seed: each training row's predictive mean and variance by the fold model that
    did not see it (standardised units): arrays (C, S, n)."""
    seeds = fitted.recipe.seeds
    mu = np.zeros((n_configs, seeds, len(x)))
    var = np.zeros((n_configs, seeds, len(x)))
    for f in range(fitted.recipe.folds):
        rows = np.flatnonzero(row_fold == f)
        for c in range(n_configs):
            ms = [m for m in fitted.members if m.config == c and m.fold == f]
            mu[c][:, rows], var[c][:, rows] = fitted.member_moments(x[rows], ms)
    return mu, var


def _variance_scale(resid: np.ndarray, var: np.ndarray, level: float) -> float:
    """The multiplier on the predictive variance that makes ``level`` of out-of-fold points fall
    inside ``mu +- z sqrt(s var)``: the ``level`` quantile of ``(r / z)^2 / var``."""
    z = uncertainty.z_value(level)
    need = (resid / z) ** 2 / np.maximum(var, 1e-12)
    return float(np.clip(np.quantile(need, level), 0.25, 100.0))


# --- suite strategies -----------------------------------------------------------------------------------


_last_fit: dict = {}  # the suite asks for several intervals of one fit in a row: fit once


def _fit_cached(x, y, recipe: Recipe) -> tuple[FittedRecipe, float]:
    """``fit_recipe`` and its seconds, reusing the previous fit when only the interval kind differs."""
    key = (replace(recipe, interval="scaled"), x.tobytes(), y.tobytes())
    if _last_fit.get("key") != key:
        t0 = time.perf_counter()
        fitted = fit_recipe(x, y, recipe)
        _last_fit.update(key=key, fitted=fitted, seconds=time.perf_counter() - t0)
    fitted = _last_fit["fitted"]
    fitted.recipe = recipe
    return fitted, _last_fit["seconds"]


def recipe_strategy(recipe: Recipe):
    """A bench/regression_suite.py strategy that fits ``recipe`` and predicts the test inputs."""
    from regression_suite import Prediction

    def run(x, y, xt):
        fitted, seconds = _fit_cached(x, y, recipe)
        center, lower, upper = fitted.predict(xt)
        chosen = [f"{fitted.configs[c][0].activation}{list(fitted.configs[c][0].hidden)} wd={fitted.configs[c][1]:g} "
                  f"{fitted.configs[c][2]}"
                  for c in fitted.chosen]
        return Prediction(center, lower, upper, float(min(fitted.oof_scores)) * fitted.y_std ** 2,
                          extra={"chosen": chosen, "scale": fitted.calib["scale"]}, seconds=seconds)

    return run


BASE = Recipe()
VARIANTS: dict[str, Recipe] = {
    "nlm-s4": replace(BASE, nets=(Net("tanh", (32, 32)),), seeds=4, top=1),
    "nlm-mix4": replace(BASE, weight_decays=(1e-4, 1e-3), seeds=2, top=4),
    # the training objective as a candidate: {evidence, mse} x {tanh32, tanh64}, the best 2 by OOF MSE
    "nlm-select": replace(BASE, losses=("evidence", "mse"), top=2),
    "nlm": BASE,
    "nlm-cvplus": replace(BASE, interval="cvplus"),
    "nlm-cvplus-norm": replace(BASE, interval="cvplus-norm"),
    "nlm-mse": replace(BASE, loss="mse"),
    "nlm-trained": replace(BASE, loss="mse", readout="trained"),
}
STRATEGIES = {name: recipe_strategy(r) for name, r in VARIANTS.items()}
