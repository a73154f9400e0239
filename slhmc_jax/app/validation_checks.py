"""The checks ``slhmc validate`` makes before it spends target calls, and the energy-only target it judges with.

- :func:`check_direct_md_feasible`: direct MD is refused for more than ``max_atoms`` atoms, or when
  replicas x (1 + burn_in_steps + md_steps) force calls x [cost] seconds_per_call exceeds
  ``max_md_cost_s`` (ConfigError naming the key);
- :func:`warn_if_thermostat_not_ergodic`: Bussi on a system that is not fully periodic;
- :func:`check_rotation_invariance`: on a molecule, the target's energy under three rigid rotations
  against the start's (4 energy calls, not charged to either sampler); a spread over
  ``ROTATION_TOLERANCE_KT`` kT is warned of and reported.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from slhmc_jax.app.config import ConfigError
from slhmc_jax.sampler.md import MDSettings


def check_direct_md_feasible(n_atoms: int, settings: MDSettings, seconds_per_call: float, *, max_atoms: int,
                             max_md_cost_s: float) -> float:
    """The estimated cost (s) of the direct MD, or ConfigError when it is over the stated budget.

    Rule: n_atoms <= max_atoms, and replicas x (1 + burn_in_steps + md_steps) x seconds_per_call
    <= max_md_cost_s (seconds_per_call: [cost] seconds_per_call, one energy + forces call).
    """
    if n_atoms > max_atoms:
        raise ConfigError(f"[validate] max_atoms: the system has {n_atoms} atoms, more than max_atoms = {max_atoms}: "
                              f"direct target MD (one target force call per MD step) is not feasible for it; "
                              f"validate on a smaller system of the same chemistry, or raise max_atoms")
    cost = settings.n_force_calls * float(seconds_per_call)
    if cost > max_md_cost_s:
        raise ConfigError(
            f"[validate] max_md_cost_s: direct target MD would need {settings.n_force_calls} force calls "
            f"({settings.n_replicas} replicas x (1 + {settings.burn_in_steps} burn-in + {settings.n_steps} steps)) x "
            f"{seconds_per_call:g} s ([cost] seconds_per_call) = {cost:.0f} s, over max_md_cost_s = {max_md_cost_s:g} s; "
            f"shorten the MD (md_steps, replicas, burn_in_steps) or raise the budget")
    return cost


def fully_periodic(pbc) -> bool:
    """True for a crystal (periodic along all three cell vectors); a molecule or slab has free rotations."""
    return all(bool(p) for p in pbc)


def warn_if_thermostat_not_ergodic(settings: MDSettings, pbc) -> None:
    """UserWarning for Bussi's global rescaling on a system that is not periodic in all three directions.

    Why: on a free molecule the target's forces conserve the total momentum P and angular momentum L,
    and a global rescaling p -> alpha p only scales them, so the MD cannot sample their canonical
    distributions (nor the energy exchanged with them); measured on the TiO2 molecule (8 replicas x
    1200 steps): T_kin 311 K at 300 K with Bussi, 301.9 K with BAOAB, whose per-atom noise mixes them.
    """
    if settings.thermostat == "bussi" and not fully_periodic(pbc):
        import warnings

        warnings.warn(f"[validate] thermostat = \"bussi\" on a system with pbc = {tuple(bool(p) for p in pbc)}: global "
                      f"velocity rescaling conserves the direction of the total (angular) momentum of a free molecule, "
                      f"so the direct MD is not ergodic there; use thermostat = \"baoab\"", UserWarning, stacklevel=3)


# rigid rotations of the rotation check: angle (deg) about a fixed axis, none of them a symmetry of a molecule
ROTATION_CHECK = ((23.0, (1.0, 0.0, 0.0)), (41.0, (0.0, 1.0, 0.3)), (67.0, (0.4, -0.2, 1.0)))
ROTATION_TOLERANCE_KT = 0.25


@dataclasses.dataclass(frozen=True)
class RotationCheck:
    """The target energy of a free molecule under rigid rotations: E(R x) - E(x) over ROTATION_CHECK.

    A target is rotation invariant in exact arithmetic; a numerical one need not be (PySCF's atom-centred
    integration grids are fixed in space: on TiO2 PBE/STO-3G the spread over ROTATION_CHECK is 76 meV at
    grids_level 0, 8.7 meV at level 1, 2.3 meV at level 2, 0.43 meV at level 3). Both samplers then sample the same non-invariant
    Boltzmann distribution, but its orientational mode decorrelates only by rotational diffusion, slowly
    in both, so the comparison of energies (and, through the torque, of geometry) needs far longer runs.
    """

    energy_spread_eV: float  # max - min of the target energy over the start geometry and its rotations
    kT_eV: float
    n_target_calls: int

    @property
    def invariant(self) -> bool:
        return self.energy_spread_eV <= ROTATION_TOLERANCE_KT * self.kT_eV

    def warn_if_not_invariant(self) -> None:
        """UserWarning naming the spread in meV and in kT when it exceeds ROTATION_TOLERANCE_KT kT."""
        if self.invariant:
            return
        import warnings

        warnings.warn(f"the target energy changes by {1e3 * self.energy_spread_eV:.2f} meV "
                      f"({self.energy_spread_eV / self.kT_eV:.2f} kT) under rigid rotations of the molecule: the target "
                      f"is not rotation invariant (for PySCF: the integration grid is too coarse, raise [target] "
                      f"grids_level). Both samplers sample its distribution, but the orientational mode mixes slowly in "
                      f"both, so the comparison needs much longer runs", UserWarning, stacklevel=3)


def check_rotation_invariance(atoms, target, temperature_K: float, *, store=None) -> RotationCheck:
    """Target energies (eV) of ``atoms`` and of its rigid rotations about the centre of mass (ROTATION_CHECK),
    their spread, and a UserWarning when it exceeds ROTATION_TOLERANCE_KT kT (``RotationCheck.warn_if_not_invariant``).
    Every result goes to ``store`` like any other target call."""
    from ase.units import kB

    from slhmc_jax.targets.stack import energy_only
    from slhmc_jax.targets.store import cached

    judge = cached(energy_only(target), store)
    configs = [atoms.copy()]
    for angle, axis in ROTATION_CHECK:
        a = atoms.copy()
        a.rotate(angle, axis, center="COM")
        configs.append(a)
    for a in configs:
        a.calc = None
    energies = np.array([r.energy_eV for r in judge.evaluate(configs, [0] * len(configs))])
    check = RotationCheck(float(energies.max() - energies.min()), float(kB * temperature_K), len(configs))
    check.warn_if_not_invariant()
    return check

