"""The plan of a workflow run before anything runs (``slhmc run --dry-run``): target calls and cost."""

from __future__ import annotations

import dataclasses

from slhmc_jax.app import config as cfg


@dataclasses.dataclass(frozen=True)
class Plan:
    """Target calls each phase makes at most (``--dry-run``) and their cost.

    Attributes:
        calls: phase -> target calls at most.
        seconds_per_call: s per energy (+ forces) call on one worker.
        workers: target workers running at once.
        energy_only: the phases whose calls compute energies only.
        seconds_per_energy_call: s per energy-only call (default: seconds_per_call).
    """

    calls: dict
    seconds_per_call: float
    workers: int
    energy_only: frozenset = frozenset()
    seconds_per_energy_call: float | None = None

    @property
    def total_calls(self) -> int:
        return int(sum(self.calls.values()))

    def seconds_of(self, phase: str) -> float:
        """Wall seconds of a phase's calls on one worker."""
        energy = self.seconds_per_call if self.seconds_per_energy_call is None else self.seconds_per_energy_call
        return self.calls[phase] * (energy if phase in self.energy_only else self.seconds_per_call)

    @property
    def estimated_seconds(self) -> float:
        return sum(self.seconds_of(k) for k in self.calls) / self.workers

    def describe(self) -> str:
        lines = [f"  {k:<28s} <= {v:7d} target calls ({'energies' if k in self.energy_only else 'energy + forces'}, "
                 f"{self.seconds_of(k):.0f} s)" for k, v in self.calls.items()]
        h = self.estimated_seconds / 3600
        energy = "" if self.seconds_per_energy_call is None else f" ({self.seconds_per_energy_call:g} s per energy alone)"
        lines.append(f"  {'total':<28s} <= {self.total_calls:7d} target calls x {self.seconds_per_call:g} s{energy} "
                     f"/ {self.workers} worker(s) = {self.estimated_seconds:.0f} s ({h:.2f} h)")
        return "\n".join(lines)


def plan(config: cfg.WorkflowConfig) -> Plan:
    """Upper bounds of the target calls of every phase (each production state may be a new label)."""
    from slhmc_jax.targets.audit import DEFAULT_CONFIGURATIONS

    s = config.sampler
    n_burn = s.n_burn_in
    calls, energy_only = {}, set()
    n_train = 0
    for k in range(config.run.iterations):
        name = f"slhmc iteration {k}"
        calls[name] = s.n_chains * (s.warmup_steps + n_burn + s.n_steps) + (1 if k == 0 else 0)
        if config.run.labels != "forces":
            energy_only.add(name)
        n_train += s.n_chains * s.n_steps
    if config.run.labels == "accepted":
        calls["forces of the SLHMC states"] = n_train
    if "relabel" in config.run.arms:
        calls["relabel labels"] = n_train * config.run.replicates
        if config.run.labels == "energy":
            energy_only.add("relabel labels")
    if config.evaluation.reference == "independent":
        r = config.reference
        calls["reference (energies)"] = r.n_chains * (r.warmup_steps + r.burn_in_steps + r.max_steps) + 1
        energy_only.add("reference (energies)")
    calls["target audit (energies)"] = DEFAULT_CONFIGURATIONS
    energy_only.add("target audit (energies)")
    workers = config.target.workers if config.target.dispatch != "serial" else 1
    return Plan(calls, config.cost.seconds_per_call, workers, frozenset(energy_only), config.cost.seconds_per_energy_call)
