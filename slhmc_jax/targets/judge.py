"""The target side of an SLHMC step: one batched query per step, answered from the label store
where possible, every new result persisted before it is used, with retries and the failure policy.

Failure policy. A configuration whose evaluation raises ``TargetEvaluationError`` is retried
``max_retries`` times; retrying the *same* configuration is unbiased, because the Metropolis
decision needs only its energy. A batch that fails without saying which configuration failed (a
plain target function raising) is re-run one configuration at a time, so a failure is always
pinned on one configuration and one chain. What still fails then:

- ``on_failure="raise"`` stops the run with the error (a checkpoint holds the state before the
  step, so the run can be resumed with other settings);
- ``on_failure="reject"`` rejects that chain's proposal only (its energy is +inf); the other
  chains of the batch are judged as usual. If failure is a fixed function of the configuration
  (the target is deterministic: ``PySCFTarget``'s retry ladder after a failed warm start uses
  the same settings and initial guesses whatever the chain's history), every chain then samples
  the target distribution truncated to the region where the target converges,
  p(x) ∝ exp(-beta E_t(x)) 1[x converges]: the move into a failing region is rejected, which
  keeps detailed balance for the truncated density. It is never silent: the count of failed
  evaluations is reported.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from slhmc_jax.targets.store import CachedTarget, LabelStore
from slhmc_jax.targets.base import TargetEvaluationError, with_forces
from slhmc_jax.targets.stack import as_target

FAILURE_POLICIES = ("raise", "reject")
LABELS = ("energy", "forces")


@dataclasses.dataclass(frozen=True)
class Judgement:
    """Target energies of one batch, and what the batch cost.

    Attributes:
        energies_eV: (n,) float64; +inf where the evaluation failed (``on_failure="reject"``).
        keys: (n,) label-store keys of the configurations (str).
        failed: (n,) bool.
        target_evaluations: configurations the target evaluated for this batch (store hits and
            failed attempts not counted).
        store_hits: configurations answered from the label store.
        wall_s, cpu_s: seconds the batch took (see :class:`Judge`).
    """

    energies_eV: np.ndarray
    keys: np.ndarray
    failed: np.ndarray
    target_evaluations: int = 0
    store_hits: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


class Judge:
    """Batched target evaluation for the sampler.

    Args:
        target: anything :func:`slhmc_jax.targets.stack.as_target` accepts.
        store: a LabelStore, its path, or None (no persistence).
        labels: "energy" (what the target computes by default) or "forces" (ask the target for
            forces too at every evaluation, so every stored row is a full training label).
        max_retries: retries of a failed configuration before the failure policy applies.
        on_failure: "raise" or "reject" (see the module docstring).

    Attributes:
        target_evaluations, store_hits: see :class:`Judgement` (so far, this process).
        n_failed: configurations given up on (rejected) so far.
        wall_s: wall-clock seconds spent in batches (``time.perf_counter``; store look-ups,
            retries and waiting for dispatched workers included), this process.
        cpu_s: CPU seconds of this process in batches (``time.process_time``: every thread of an
            in-process target such as PySCFTarget; NOT the CPU of dispatched worker processes).
    """

    def __init__(self, target, store=None, *, labels: str = "energy", max_retries: int = 2, on_failure: str = "raise"):
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}; got {labels!r}")
        if on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}; got {on_failure!r}")
        target = as_target(target)
        if labels == "forces":
            target = with_forces(target)
        if store is not None and not isinstance(store, LabelStore):
            store = LabelStore(store)
        self.cached = CachedTarget(target, store)
        self.max_retries = int(max_retries)
        self.on_failure = on_failure
        self.n_failed = 0
        self.wall_s = 0.0
        self.cpu_s = 0.0

    @property
    def target(self):
        return self.cached.target

    @property
    def store(self) -> LabelStore | None:
        return self.cached.store

    @property
    def target_evaluations(self) -> int:
        """Configurations the target evaluated (store hits and failed attempts not counted)."""
        return self.cached.target_evaluations

    @property
    def store_hits(self) -> int:
        """Configurations answered from the label store."""
        return self.cached.store_hits

    def keys(self, atoms_list: Sequence[Any]) -> np.ndarray:
        return np.array([self.cached.key(a) for a in atoms_list])

    def __call__(self, atoms_list: Sequence[Any], chains: Sequence[int]) -> Judgement:
        """Energies (eV) of ``atoms_list``; ``chains[j]`` is the chain of configuration j."""
        wall, cpu = time.perf_counter(), time.process_time()
        evaluations, hits = self.target_evaluations, self.store_hits
        try:
            energies, failed = self._judge(atoms_list, chains)
            keys = self.keys(atoms_list)
        finally:
            wall_s, cpu_s = time.perf_counter() - wall, time.process_time() - cpu
            self.wall_s += wall_s
            self.cpu_s += cpu_s
        return Judgement(energies, keys, failed, target_evaluations=self.target_evaluations - evaluations,
                         store_hits=self.store_hits - hits, wall_s=wall_s, cpu_s=cpu_s)

    def _judge(self, atoms_list: Sequence[Any], chains: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(energies_eV (n,), failed (n,) bool) under the retry and failure policy."""
        n = len(atoms_list)
        energies = np.full(n, np.inf)
        done = np.zeros(n, bool)
        attempts = np.zeros(n, np.int64)
        failed = np.zeros(n, bool)
        batch_ok = True  # False once a batch failed without naming its configuration
        while not np.all(done | failed):
            pending = np.flatnonzero(~(done | failed))
            groups = [pending] if batch_ok else [pending[:1]]
            for group in groups:
                try:
                    for j, r in self.cached.evaluate_streaming([atoms_list[i] for i in group], [chains[i] for i in group]):
                        energies[group[j]] = float(r.energy_eV)
                        done[group[j]] = True
                except TargetEvaluationError as err:
                    if err.index is None and len(group) > 1:
                        batch_ok = False  # isolate: one configuration at a time from now on
                        continue
                    culprit = group[err.index or 0]
                    attempts[culprit] += 1
                    if attempts[culprit] > self.max_retries:
                        if self.on_failure == "raise":
                            raise
                        failed[culprit] = True
                        self.n_failed += 1
        return energies, failed
