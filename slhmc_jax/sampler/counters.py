"""What an SLHMC run counts: one typed value, carried by the driver state, the checkpoint and the result.

Every count covers the whole run (start structures, warm-up, burn-in and production; the earlier
segments of a resumed run included): the driver adds what each judge call reports
(:class:`slhmc_jax.targets.judge.Judgement`) and what each step's proposal did, nothing else
writes them.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class SamplerCounters:
    """The counters of a run.

    Attributes:
        judged: distinct configurations judged (by the target or the label store), per batch: the
            cost of the run without a store.
        target_evaluations: configurations the target itself evaluated.
        store_hits: configurations answered from the label store.
        failed: target evaluations given up on (``on_failure="reject"``).
        target_wall_s, target_cpu_s: seconds the target's batches took as the judge sees them:
            wall clock (``time.perf_counter``), and this process's CPU time
            (``time.process_time``, all its threads: the cost of an in-process target such as
            PySCFTarget; a dispatched target's worker CPU is not in it, use the wall time there).
        screen_evaluations: configurations the delayed-acceptance screen evaluated.
        screen_rejected: proposals rejected by stage one (divergent ones not counted: they reach
            neither stage), i.e. target evaluations saved.
        stage_two: proposals that passed stage one and went to the target.
        stage_two_accepted: of those, accepted by stage two.
        screen_wall_s, screen_cpu_s: as target_wall_s / target_cpu_s, for the screen.
        divergent: (n_chains,) int64, divergent ML trajectories per chain (rejected without a
            target call).
        neighbour_reallocations: neighbour-layout growths after an overflow.
    """

    divergent: np.ndarray
    judged: int = 0
    target_evaluations: int = 0
    store_hits: int = 0
    failed: int = 0
    target_wall_s: float = 0.0
    target_cpu_s: float = 0.0
    screen_evaluations: int = 0
    screen_rejected: int = 0
    stage_two: int = 0
    stage_two_accepted: int = 0
    screen_wall_s: float = 0.0
    screen_cpu_s: float = 0.0
    neighbour_reallocations: int = 0

    @classmethod
    def zero(cls, n_chains: int) -> "SamplerCounters":
        return cls(divergent=np.zeros(n_chains, np.int64))

    def add(self, **increments) -> "SamplerCounters":
        """A copy with ``increments`` added to the named counters."""
        return dataclasses.replace(self, **{name: getattr(self, name) + value for name, value in increments.items()})

    def judged_by_target(self, verdict, n_distinct: int) -> "SamplerCounters":
        """After a target batch: ``verdict`` a :class:`~slhmc_jax.targets.judge.Judgement`,
        ``n_distinct`` the distinct configurations it judged."""
        return self.add(judged=n_distinct, target_evaluations=verdict.target_evaluations,
                        store_hits=verdict.store_hits, failed=int(np.count_nonzero(verdict.failed)),
                        target_wall_s=verdict.wall_s, target_cpu_s=verdict.cpu_s)

    def judged_by_screen(self, verdict) -> "SamplerCounters":
        """After a batch of the delayed-acceptance screen (its failures are stage-one rejections)."""
        return self.add(screen_evaluations=verdict.target_evaluations, screen_wall_s=verdict.wall_s,
                        screen_cpu_s=verdict.cpu_s)
