"""Torch thread counts sized to the work, restored on exit: the one place nndl sets them.

Tiny work runs on one thread (a second OpenMP thread costs more in wake-ups than it saves, and on
a busy machine far more); a stack of models measures one thread against the caller's count as it
trains (:class:`ThreadProbe`).
"""
from __future__ import annotations

import contextlib
import os
import math
import time

import torch
from torch import nn

# Below this many multiply-adds per optimiser step (models x rows x weights) a second OpenMP
# thread may cost more in wake-ups than it saves, and on a busy machine it is ruinous: the seed
# preset's batched 5-fold CV took 4.0 s on 1 thread and 44 s on 2 on a 2-core machine shared with
# other users' jobs (load average 2-4, measured back to back), while on a quiet machine 2 threads
# take 0.65 s against 1 thread's 1.0 s. So tiny work starts on one thread, and a stack of models
# (the batched CV) measures both counts as it trains and keeps the faster (ThreadProbe).
ONE_THREAD_BELOW = 2e8

_caller_threads: list[int] = []  # the thread count the outermost thread_policy found (the caller's)


def step_work(n_models: int, rows: int, model: nn.Module) -> float:
    """Multiply-adds of one forward pass of ``n_models`` copies of ``model`` over ``rows`` rows."""
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    return float(n_models) * rows * weights


@contextlib.contextmanager
def thread_policy(work: float, threads: int = 0):
    """Run a block with a torch intra-op thread count chosen for ``work`` (see :func:`step_work`).

    ``threads > 0`` is used as given; ``0`` means one thread for tiny work (below
    :data:`ONE_THREAD_BELOW`; a stack trained inside may then probe the caller's count, see
    :class:`ThreadProbe`) and the caller's count otherwise. The caller's count is restored on
    exit, so a library call never leaks a thread setting into the user's process.
    """
    before = torch.get_num_threads()
    _caller_threads.append(_caller_threads[0] if _caller_threads else before)
    want = threads if threads > 0 else (1 if work < ONE_THREAD_BELOW else before)
    if want != before:
        torch.set_num_threads(want)
    try:
        yield want
    finally:
        _caller_threads.pop()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class ThreadProbe:
    """While a stack trains, use one thread or the caller's thread count, whichever is measured faster.

    Which is faster depends on how busy the machine is at the moment, not on the work alone
    (see :data:`ONE_THREAD_BELOW`). Each count trains one unmeasured epoch (switching counts
    wakes new threads) and then ``probe`` measured ones. More threads are chosen only when their
    mean epoch is clearly shorter (below ``margin`` times one thread's) and steady: on a busy
    machine OpenMP threads that wait for each other give mostly short epochs with rare 50x
    stalls, which a mean over a few epochs can miss. So while more threads are in use, one epoch
    three times slower than they measured switches back to one thread at once. The choice holds
    for ``hold`` epochs, then both counts are measured again. The thread count changes only the
    time: the batched matrix products give the same numbers on 1 or 2 threads
    (``tests/test_stacked_members.py`` checks it).
    """

    def __init__(self, counts: tuple[int, ...], probe: int = 4, hold: int = 60, margin: float = 0.8):
        self.counts, self.probe, self.hold, self.margin = counts, probe, hold, margin
        self.plan: list[tuple[int, bool]] = []  # (threads, measured) for the coming epochs
        self.samples: dict[int, list[float]] = {}
        self.current, self.hold_until, self.reference = counts[0], 0, math.inf
        self._measure_again()

    @classmethod
    def for_stack(cls, threads_setting: int) -> "ThreadProbe | None":
        """A probe when the thread policy put tiny work on one thread and the caller has more
        (``threads = 0``); None when the count was given or there is nothing to choose from."""
        caller = _caller_threads[0] if _caller_threads else torch.get_num_threads()
        if threads_setting or torch.get_num_threads() != 1 or caller <= 1:
            return None
        return cls((1, caller))

    def _measure_again(self) -> None:
        self.plan = [(c, measured) for c in self.counts for measured in [False] + [True] * self.probe]
        self.samples = {c: [] for c in self.counts}

    def _choose(self, epoch: int) -> None:
        one, many = self.counts[0], self.counts[-1]
        mean = {c: sum(v) / len(v) for c, v in self.samples.items()}
        steady = max(self.samples[many]) < 3 * min(self.samples[many])
        self.current = many if steady and mean[many] < self.margin * mean[one] else one
        self.reference, self.hold_until = mean[self.current], epoch + self.hold

    def begin(self, epoch: int) -> None:
        """Set the thread count for epoch ``epoch`` (0-based; epoch 0 warms up on the current count)."""
        want = self.plan[0][0] if epoch > 0 and self.plan else self.current
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def end(self, epoch: int, seconds: float) -> None:
        """Record epoch ``epoch``'s time; choose once every count has been measured."""
        if epoch == 0:
            return
        if self.plan:
            threads, measured = self.plan.pop(0)
            if measured:
                self.samples[threads].append(seconds)
            if not self.plan:
                self._choose(epoch)
        elif self.current != self.counts[0] and seconds > 3 * self.reference:
            self.current, self.hold_until = self.counts[0], epoch + self.hold  # a stall: back to one thread
        elif epoch >= self.hold_until:
            self._measure_again()


@contextlib.contextmanager
def threads_per_worker(workers: int):
    """With several worker processes on this machine, each takes its share of the cores instead of all
    of them (oversubscribed cores thrash); torch's thread count is restored afterwards."""
    if workers <= 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def using_threads(threads: int):
    """Run a block on ``threads`` torch threads (``0``: the caller's count), restored on exit."""
    with thread_policy(math.inf, threads) as count:
        yield count
