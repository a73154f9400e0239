"""The plan of a workflow run before anything runs (``slhmc run --dry-run``): target calls and cost."""

from __future__ import annotations

import dataclasses

from slhmc_jax.app import config as cfg


@dataclasses.dataclass(frozen=True)
class Plan:
    """Target calls each phase makes at most (``--dry-run``) and their cost."""

    calls: dict
    seconds_per_call: float
    workers: int

    @property
    def total_calls(self) -> int:
        return int(sum(self.calls.values()))

    @property
    def estimated_seconds(self) -> float:
        return self.total_calls * self.seconds_per_call / self.workers

    def describe(self) -> str:
        lines = [f"  {k:<28s} <= {v:7d} target calls" for k, v in self.calls.items()]
        h = self.estimated_seconds / 3600
        lines.append(f"  {'total':<28s} <= {self.total_calls:7d} target calls x {self.seconds_per_call:g} s "
                     f"/ {self.workers} worker(s) = {self.estimated_seconds:.0f} s ({h:.2f} h)")
        return "\n".join(lines)


def plan(config: cfg.WorkflowConfig) -> Plan:
    """Upper bounds of the target calls of every phase (each production state may be a new label)."""
    s = config.sampler
    n_burn = s.n_burn_in
    calls = {}
    n_train = 0
    for k in range(config.run.iterations):
        calls[f"slhmc iteration {k}"] = s.n_chains * (s.warmup_steps + n_burn + s.n_steps) + (1 if k == 0 else 0)
        n_train += s.n_chains * s.n_steps
    if config.run.labels == "accepted":
        calls["forces of the SLHMC states"] = n_train
    if "relabel" in config.run.arms:
        calls["relabel labels"] = n_train * config.run.replicates
    if config.evaluation.reference == "independent":
        r = config.reference
        calls["reference (energies)"] = r.n_chains * (r.warmup_steps + r.burn_in_steps + r.max_steps) + 1
    workers = config.target.workers if config.target.dispatch != "serial" else 1
    return Plan(calls, config.cost.seconds_per_call, workers)
