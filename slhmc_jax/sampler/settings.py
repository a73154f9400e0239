"""The settings of an SLHMC run: what defines the chains, checked once where they enter."""

from __future__ import annotations

import dataclasses

from slhmc_jax.checks import FieldCheck
from slhmc_jax.targets.judge import FAILURE_POLICIES

ENSEMBLES = ("nvt", "npt", "npt_orthorhombic")


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Everything that defines an SLHMC run (validated on construction; a checkpoint compares it).

    Attributes:
        temperature_K: K (> 0).
        n_chains: chains run side by side (>= 1).
        n_steps: recorded production Metropolis steps per chain (>= 1).
        trajectory_steps: velocity-Verlet steps L of each ML trajectory (>= 1; the start value
            when warm-up tunes it).
        timestep_fs: velocity-Verlet step dt, fs (> 0; the start value when warm-up tunes it).
        seed: integer seed of every random draw.
        timestep_jitter: j in [0, 1): each chain's every trajectory runs at dt (1 + j u), u ~ U(-1, 1)
            drawn from the chain's key (independent of its state, so the chain stays exact). A fixed
            trajectory length L dt resonates with the vibrations of a stiff, near-harmonic system:
            measured on the TiO2 quickstart molecule (fine-tuned proposal, dt 1.54 fs, no jitter),
            the Ti-O distance's IAT is 0.3, 1.5, 11.4 and 9.2 steps at L = 32, 49, 24 and 64; with
            j = 0.5 it is 1.0 at L = 24 and 49 (j = 0.2: 5.1 and 1.2). Jitter averages over the
            phases (Mackenzie, Phys. Lett. B 226, 369 (1989)); 0 turns it off.
        ensemble: "nvt", "npt" (isotropic cell moves) or "npt_orthorhombic" (a, b, c independently).
        pressure_GPa: GPa, required for NPT.
        warmup_steps: steps that tune dt and L (not recorded; >= 0).
        burn_in_steps: steps at the final dt and L that are not recorded; None: 0 after a
            warm-up, else 10% of ``n_steps`` (at least 1), so the start structure is not kept.
        target_acceptance: the acceptance warm-up aims at, in (0, 1).
        max_trajectory_steps: upper bound of the tuned L (default 4 x trajectory_steps).
        max_log_cell_step: largest change of ln V (or each ln length) of a cell move (> 0).
        skin_A: Verlet skin of the proposal's neighbour list, A (>= 0).
        on_failure: "raise" or "reject" (:mod:`slhmc_jax.targets.judge`).
        max_retries: retries of a failed target evaluation (>= 0).
    """

    temperature_K: float
    n_chains: int
    n_steps: int
    trajectory_steps: int
    timestep_fs: float
    seed: int
    ensemble: str = "nvt"
    pressure_GPa: float | None = None
    warmup_steps: int = 0
    burn_in_steps: int | None = None
    target_acceptance: float = 0.65
    max_trajectory_steps: int | None = None
    max_log_cell_step: float = 0.05
    skin_A: float = 0.5
    on_failure: str = "raise"
    max_retries: int = 2
    timestep_jitter: float = 0.5

    # fields a resumed run may change: the run length and how failures are handled
    RESUMABLE_CHANGES = ("n_steps", "on_failure", "max_retries")

    def __post_init__(self):
        check = FieldCheck(self)
        check.number("temperature_K", 0, lo_open=True, expected="a positive number")
        for name in ("n_chains", "n_steps", "trajectory_steps"):
            check.integer(name, 1, expected="a positive integer")
        check.number("timestep_fs", 0, lo_open=True, expected="a positive number")
        check.integer("seed")
        check.choice("ensemble", ENSEMBLES, expected=f"one of {ENSEMBLES} ('npt' is isotropic)")
        if self.ensemble == "nvt":
            check.require(self.pressure_GPa is None, "pressure_GPa",
                          "None for ensemble='nvt' (choose 'npt' or 'npt_orthorhombic' to set a pressure)")
        else:
            check.require(self.pressure_GPa is not None, "pressure_GPa",
                          f"a finite number (GPa) for ensemble={self.ensemble!r}")
            check.number("pressure_GPa", expected="a finite number (GPa)")
        check.integer("warmup_steps", 0, expected="a non-negative integer")
        check.integer("burn_in_steps", 0, optional=True, expected="a non-negative integer or None")
        check.number("target_acceptance", 0, 1, lo_open=True, hi_open=True, expected="in (0, 1)")
        check.integer("max_trajectory_steps", 1, optional=True, expected="a positive integer or None")
        check.number("max_log_cell_step", 0, lo_open=True, expected="a positive number")
        check.number("skin_A", 0, expected="a finite non-negative distance in A")
        check.choice("on_failure", FAILURE_POLICIES)
        check.integer("max_retries", 0, expected="a non-negative integer")
        check.number("timestep_jitter", 0, 1, hi_open=True, expected="a number in [0, 1)")

    @property
    def n_burn_in(self) -> int:
        """Unrecorded steps at fixed dt and L after the warm-up (see ``burn_in_steps``)."""
        if self.burn_in_steps is not None:
            return self.burn_in_steps
        return 0 if self.warmup_steps else max(1, round(0.1 * self.n_steps))

    @property
    def max_trajectory(self) -> int:
        """Upper bound of the tuned trajectory length L (``max_trajectory_steps`` or 4 x the start L)."""
        return self.max_trajectory_steps or 4 * self.trajectory_steps

    @property
    def total_steps(self) -> int:
        """Metropolis steps of the whole run: warm-up, burn-in and production."""
        return self.warmup_steps + self.n_burn_in + self.n_steps

    def differences(self, other: "SamplerSettings") -> dict:
        """{field: (self, other)} of the chain-defining fields that differ (resumable ones excluded)."""
        out = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name not in self.RESUMABLE_CHANGES and a != b:
                out[f.name] = (a, b)
        return out
