"""The proof of SLHMC: its samples against direct MD on the target's own forces, per target call.

``slhmc validate`` runs, on one system and one target:

1. **direct target MD**: velocity Verlet with the TARGET's forces under a thermostat that samples
   the canonical ensemble exactly as dt -> 0 (:class:`MDSettings`):

   - "baoab": Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013), per step
     p += dt/2 F; x += dt/2 p/m; p = c p + sqrt((1 - c^2) m kT) xi (c = exp(-gamma dt));
     x += dt/2 p/m; F = F_target(x); p += dt/2 F;
   - "bussi": stochastic velocity rescaling (Bussi, Donadio & Parrinello 2007), symmetric
     splitting: p *= alpha(dt/2); velocity Verlet step; p *= alpha(dt/2)
     (:func:`slhmc_jax.sampler.integrators.bussi_factor`).

   The thermostat rules are pure functions (:mod:`slhmc_jax.sampler.integrators`, jitted here in
   :func:`md_kernel`); the target is called on the host once per MD step with all replicas in
   one batch (warm starts per replica), every result committed to the label store before it is
   used, every configuration counted. Start: Maxwell-Boltzmann momenta, ``burn_in_steps``
   discarded. The target runs in this process ([target] dispatch is not used: one PySCF process,
   its replicas one after the other, each warm-started from its own previous step).

2. **SLHMC** (:func:`slhmc_jax.sample`) on the same target, system and temperature, once per
   proposal: "foundation" (the [model] foundation unchanged) and "finetuned". The fine-tuned
   proposal is the foundation fine-tuned (:func:`slhmc_jax.finetune.finetune`, the [finetune]
   recipe) on up to ``finetune_structures`` direct-MD frames with their target energies and
   forces: the cheapest honest route, because those labels are exact canonical draws that the
   validation has already paid for (zero extra target calls; SLHMC labels would need forces at
   every proposal). The fine-tuned arm's ratio below does not charge those training calls; the
   JSON says how many labels it used (``finetune.structures``). SLHMC's target judges energies only.

3. **comparison**, per observable (the [evaluation] pairs' nearest-neighbour distance, as the
   per-frame mean of each a atom's k nearest b distances, ``nn_<a>-<b>_A`` in A, and the target
   energy ``target_energy_eV`` in eV):

   - Kolmogorov-Smirnov statistic and p-value (``scipy.stats.ks_2samp``) of SLHMC against direct MD
     on samples thinned by their own integrated autocorrelation time (every ceil(tau)-th draw of
     each chain, tau the larger of ArviZ's and the batch-means estimate, :func:`batch_means_iat`,
     which an MD trajectory's oscillating autocorrelation does not fool), so that the draws are
     close to independent and the p-value is honest;
   - Wasserstein W1 with its moving-block bootstrap interval (:func:`slhmc_jax.analysis.observables.wasserstein`,
     blocks from the same conservative tau);
   - the ESS of the observable (:func:`slhmc_jax.analysis.diagnostics.chain_statistics`, one estimator for
     both, credited at most the number of draws: :func:`capped_ess`) per target call (every call counted: the MD's force calls, SLHMC's start, warm-up,
     burn-in and production judgements), and the ratio SLHMC / direct MD; also per second of
     target time (a force call costs more than an energy).

Feasibility rule (checked before anything runs; :func:`check_direct_md_feasible`): direct MD is
refused for more than ``max_atoms`` atoms, or when replicas x (1 + burn_in_steps + md_steps) force
calls x [cost] seconds_per_call exceeds ``max_md_cost_s``. Bussi on a system that is not fully periodic
is warned of (:func:`warn_if_thermostat_not_ergodic`). On a molecule, before the MD, the target's
energy under three rigid rotations is compared with the start's (:func:`check_rotation_invariance`,
4 energy calls, not charged to either sampler): a spread over 0.25 kT is warned of and reported.

Output (``RUN_DIR``): ``validation.json``, ``validation.md``, ``figures/validation_<observable>.png``
(histograms, direct MD against each SLHMC proposal), ``labels.sqlite``, ``md.npz``,
``slhmc_<proposal>/``, ``models/finetuned.*``. ``validation.json`` layout ({proposal} is
"foundation" / "finetuned", {sampler} is "direct_md" or a proposal, {obs} an observable name)::

    ess_per_target_call_ratio   {proposal: {obs: ESS/call of SLHMC / ESS/call of direct MD}}
    ess_per_target_second_ratio {proposal: {obs: the same per second of target wall time}}
    ks_pvalue, ks_statistic     {proposal: {obs: value}}    SLHMC against direct MD, thinned
    wasserstein                 {proposal: {obs: [W1, ci_low, ci_high]}}
    ess, ess_per_target_call, iat_steps, iat_batch_means_steps, means, ks_samples   {sampler: {obs: value}}
    target_calls, acceptance    {sampler: value}
    runtime_s                   {phase: seconds when it ran, total, this_session}; target_seconds {sampler: {wall, cpu}}
    kinetic_temperature_K       {mean: the MD's, standard_error (batch means), thermostat_K}
    rotation_check              {energy_spread_eV, kT_eV, n_target_calls} (molecules; null for crystals)
    finetune, settings, system, figures   what was run and written

The ESS ratios are of production runs: SLHMC's calls include its start, warm-up and burn-in, the
MD's its start and burn-in; the fine-tuned proposal's training labels are the MD's own frames.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import precision  # noqa: F401  (float64)
from slhmc_jax.app import config as cfg
from slhmc_jax.sampler import integrators as ig

SAMPLERS = ("direct_md",) + cfg.VALIDATE_PROPOSALS


# ----------------------------------------------------------------------------------------
# direct target MD: settings and the pure kernel


@dataclasses.dataclass(frozen=True)
class MDSettings:
    """Thermostatted MD on the target's forces (validated on construction: ValueError naming the field).

    Attributes:
        thermostat: "baoab" (Langevin, ``friction_per_ps``) or "bussi" (velocity rescaling, ``tau_fs``).
        temperature_K: K (> 0; required: a thermostat without a temperature is refused).
        timestep_fs: MD step, fs (> 0).
        n_steps: recorded steps per replica (>= 1).
        n_replicas: independent replicas, one batched target call per step (>= 1).
        burn_in_steps: discarded steps after the Maxwell-Boltzmann start (>= 0).
        friction_per_ps: Langevin friction gamma, 1/ps (> 0). tau_fs: Bussi time constant, fs (> 0).
        seed: seeds the start momenta and every thermostat draw (a jax.random key).
    """

    thermostat: str
    temperature_K: float | None
    timestep_fs: float
    n_steps: int
    n_replicas: int = 1
    burn_in_steps: int = 0
    friction_per_ps: float = 20.0
    tau_fs: float = 50.0
    seed: int = 0

    def __post_init__(self):
        if self.thermostat not in cfg.THERMOSTATS:
            raise ValueError(f"thermostat must be one of {cfg.THERMOSTATS}; got {self.thermostat!r}")
        t = self.temperature_K
        if t is None or isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"the {self.thermostat!r} thermostat needs a temperature: temperature_K must be a "
                             f"positive number of kelvin; got {t!r}")
        for name in ("timestep_fs", "friction_per_ps", "tau_fs"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number; got {v!r}")
        for name, low in (("n_steps", 1), ("n_replicas", 1), ("burn_in_steps", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {v!r}")

    @property
    def n_force_calls(self) -> int:
        """Target force calls of the run: replicas x (start + burn-in + recorded steps)."""
        return self.n_replicas * (1 + self.burn_in_steps + self.n_steps)


class MDKernel(NamedTuple):
    """The pure pieces of one thermostatted MD step around the host's force call.

    ``init(key, n_replicas) -> momenta (R, N, 3)``: Maxwell-Boltzmann.
    ``before_force(x, p, f, key) -> (x', p', key')``: everything up to the new positions.
    ``after_force(p', f', key') -> (p'', key'')``: the last half kick (and thermostat half step).
    """

    init: object
    before_force: object
    after_force: object


def md_kernel(settings: MDSettings, masses) -> MDKernel:
    """The jitted step functions of ``settings`` for atoms of ``masses`` (n_atoms,) amu.

    Positions (R, N, 3) A, momenta (R, N, 3) amu*A/ASE-time, forces (R, N, 3) eV/A; the equations
    are in the module docstring (BAOAB; Bussi with symmetric half steps).
    """
    masses = jnp.asarray(masses, jnp.float64)
    dt = settings.timestep_fs * ig.FS
    kT = ig.KB_EV_PER_K * settings.temperature_K
    inv_m = (1.0 / masses)[:, None]
    baoab = settings.thermostat == "baoab"
    decay = ig.langevin_decay(settings.timestep_fs, settings.friction_per_ps) if baoab else \
        jnp.exp(-0.5 * settings.timestep_fs / settings.tau_fs)

    @functools.partial(jax.jit, static_argnums=1)
    def init(key, n_replicas: int):
        keys = jax.random.split(key, n_replicas)
        return jax.vmap(lambda k: ig.maxwell_boltzmann(k, masses, settings.temperature_K))(keys)

    @jax.jit
    def before_force(x, p, f, key):
        key, sub = jax.random.split(key)
        if baoab:
            p = p + 0.5 * dt * f
            x = x + 0.5 * dt * p * inv_m
            p = ig.ornstein_uhlenbeck(p, masses, kT, decay, jax.random.normal(sub, p.shape, p.dtype))
            x = x + 0.5 * dt * p * inv_m
        else:
            p = ig.bussi_rescale(sub, p, masses, kT, decay)
            p = p + 0.5 * dt * f
            x = x + dt * p * inv_m
        return x, p, key

    @jax.jit
    def after_force(p, f, key):
        p = p + 0.5 * dt * f
        if not baoab:
            key, sub = jax.random.split(key)
            p = ig.bussi_rescale(sub, p, masses, kT, decay)
        return p, key

    return MDKernel(init, before_force, after_force)


def kinetic_temperature_K(momenta, masses) -> np.ndarray:
    """T_kin = 2 K / (n_f k_B), n_f = 3 n_atoms, of momenta (..., n_atoms, 3) (numpy, K)."""
    p = np.asarray(momenta)
    kinetic = 0.5 * np.sum(p**2 / np.asarray(masses)[:, None], axis=(-2, -1))
    return 2.0 * kinetic / (3 * p.shape[-2] * ig.KB_EV_PER_K)


# ----------------------------------------------------------------------------------------
# direct target MD: the host loop


@dataclasses.dataclass(frozen=True)
class MDResult:
    """The recorded (post burn-in) steps of every replica.

    Attributes:
        positions: (R, n_steps, N, 3) A. cell: (3, 3) A. numbers: (N,). pbc: (3,) bool.
        energies: (R, n_steps) target energy, eV. forces: (R, n_steps, N, 3) target forces, eV/A.
        kinetic_temperature_K: (R, n_steps) 2 K / (3 N k_B) after each step.
        n_target_calls: configurations judged, start and burn-in included (identical start
            structures count once; the cost without a store).
        n_evaluated: of those, evaluated by the target (the rest came from the store).
        target_wall_s, target_cpu_s: seconds in target batches (wall; this process's CPU).
        wall_s: the whole run.
    """

    positions: np.ndarray
    cell: np.ndarray
    numbers: np.ndarray
    pbc: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    kinetic_temperature_K: np.ndarray
    n_target_calls: int
    n_evaluated: int
    target_wall_s: float
    target_cpu_s: float
    wall_s: float


def run_direct_md(atoms, target, settings: MDSettings, *, store=None, progress: bool = True) -> MDResult:
    """Thermostatted MD of ``settings.n_replicas`` replicas of ``atoms`` on the target's forces.

    Args:
        atoms: ase.Atoms, the start of every replica (fixed cell).
        target: anything :func:`slhmc_jax.targets.as_target` accepts that computes forces.
        settings: :class:`MDSettings`.
        store: a :class:`slhmc_jax.targets.store.LabelStore`, its path, or None: every target result is
            committed there before the step uses it (a rerun with the same seed is answered from it).
        progress: tqdm progress bar.

    Raises:
        ValueError: the target cannot compute forces.
    """
    from tqdm.auto import tqdm

    from slhmc_jax.targets.store import cached
    from slhmc_jax.targets.base import as_target, with_forces

    t_start = time.perf_counter()
    target = with_forces(as_target(target))
    judge = cached(target, store)
    masses = np.asarray(atoms.get_masses())
    kernel = md_kernel(settings, masses)
    R = settings.n_replicas
    chains = list(range(R))
    counters = {"calls": 0, "wall": 0.0, "cpu": 0.0}

    def forces_at(x):
        configs = []
        for r in range(R):
            a = atoms.copy()
            a.calc = None
            a.positions = np.asarray(x[r], np.float64)
            configs.append(a)
        wall, cpu = time.perf_counter(), time.process_time()
        results = judge.evaluate(configs, chains)
        counters["wall"] += time.perf_counter() - wall
        counters["cpu"] += time.process_time() - cpu
        counters["calls"] += len({judge.key(a) for a in configs})
        if any(r.forces_eV_A is None for r in results):
            raise ValueError("the target returned no forces: direct MD needs a target with forces")
        return (np.array([r.energy_eV for r in results]), np.stack([np.asarray(r.forces_eV_A) for r in results]))

    key = jax.random.PRNGKey(settings.seed)
    key, k0 = jax.random.split(key)
    x = jnp.asarray(np.broadcast_to(atoms.positions, (R, len(atoms), 3)).copy())
    p = kernel.init(k0, R)
    energy, f = forces_at(np.asarray(x))
    f = jnp.asarray(f)
    n_total = settings.burn_in_steps + settings.n_steps
    rec_x, rec_e, rec_f, rec_t = [], [], [], []
    with tqdm(total=n_total, disable=not progress, desc="direct MD") as bar:
        for step in range(n_total):
            x, p_half, key = kernel.before_force(x, p, f, key)
            energy, f_np = forces_at(np.asarray(x))
            f = jnp.asarray(f_np)
            p, key = kernel.after_force(p_half, f, key)
            if step >= settings.burn_in_steps:
                rec_x.append(np.asarray(x))
                rec_e.append(energy)
                rec_f.append(f_np)
                rec_t.append(kinetic_temperature_K(p, masses))
            bar.update(1)
    t = lambda v: np.ascontiguousarray(np.moveaxis(np.stack(v), 0, 1))  # noqa: E731  (steps, R) -> (R, steps)
    return MDResult(positions=t(rec_x), cell=np.asarray(atoms.cell.array), numbers=np.asarray(atoms.numbers),
                    pbc=np.asarray(atoms.pbc, bool), energies=t(rec_e), forces=t(rec_f), kinetic_temperature_K=t(rec_t),
                    n_target_calls=int(counters["calls"]), n_evaluated=int(judge.n_evaluated),
                    target_wall_s=float(counters["wall"]), target_cpu_s=float(counters["cpu"]),
                    wall_s=time.perf_counter() - t_start)


def check_direct_md_feasible(n_atoms: int, settings: MDSettings, seconds_per_call: float, *, max_atoms: int,
                             max_md_cost_s: float) -> float:
    """The estimated cost (s) of the direct MD, or ConfigError when it is over the stated budget.

    Rule: n_atoms <= max_atoms, and replicas x (1 + burn_in_steps + md_steps) x seconds_per_call
    <= max_md_cost_s (seconds_per_call: [cost] seconds_per_call, one energy + forces call).
    """
    if n_atoms > max_atoms:
        raise cfg.ConfigError(f"[validate] max_atoms: the system has {n_atoms} atoms, more than max_atoms = {max_atoms}: "
                              f"direct target MD (one target force call per MD step) is not feasible for it; "
                              f"validate on a smaller system of the same chemistry, or raise max_atoms")
    cost = settings.n_force_calls * float(seconds_per_call)
    if cost > max_md_cost_s:
        raise cfg.ConfigError(
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

    from slhmc_jax.targets.store import cached

    judge = cached(_energy_only(target), store)
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


# ----------------------------------------------------------------------------------------
# observables and the comparison (pure, numpy)


@dataclasses.dataclass(frozen=True)
class ObservableComparison:
    """One observable: SLHMC (one proposal) against direct MD.

    Attributes:
        ks_statistic, ks_pvalue: two-sample KS on IAT-thinned draws.
        wasserstein: (W1, ci_low, ci_high) in the observable's unit.
        ess_md, ess_slhmc: bulk ESS, at most the draws (:func:`capped_ess`). iat_md, iat_slhmc: pooled
            IAT, steps of each sampler (below 1 for an antithetic chain).
        ess_per_call_md, ess_per_call_slhmc: ESS / target calls. ratio: slhmc / md.
        n_ks_md, n_ks_slhmc: draws in the KS test after thinning (every ceil(tau)-th draw of each
            chain, tau the larger of the ArviZ and the batch-means IAT).
        iat_batch_means_md, iat_batch_means_slhmc: :func:`batch_means_iat` (NaN for short chains).
    """

    ks_statistic: float
    ks_pvalue: float
    wasserstein: tuple
    ess_md: float
    ess_slhmc: float
    iat_md: float
    iat_slhmc: float
    ess_per_call_md: float
    ess_per_call_slhmc: float
    ratio: float
    n_ks_md: int
    n_ks_slhmc: int
    iat_batch_means_md: float = float("nan")
    iat_batch_means_slhmc: float = float("nan")


def batch_means_iat(values, n_batches: int = 8) -> float:
    """Integrated autocorrelation time (draws) by batch means: tau = m var(batch means) / var(draws),
    with each chain of ``values`` (n_chains, n_draws) cut into ``n_batches`` batches of m draws.

    Unlike Geyer's initial-sequence estimator (ArviZ), which stops summing the autocorrelation where a
    pair of lags turns negative, this does not truncate an oscillating autocorrelation: the potential
    energy of a thermostatted MD trajectory oscillates at twice the vibrational frequency on top of a
    slowly decaying envelope, and the initial-sequence tau misses the envelope (measured on TiO2 at
    300 K, 20 / ps: 18 steps vs 24-32 by batch means). NaN when a chain is shorter than 2 batches.
    """
    v = np.asarray(values, np.float64)
    m = v.shape[1] // n_batches
    if m < 2 or not np.var(v) > 0:
        return float("nan")
    means = v[:, : m * n_batches].reshape(v.shape[0], n_batches, m).mean(axis=-1)
    return float(max(1.0, m * np.var(means, ddof=1) / np.var(v)))


def mean_standard_error(values) -> float:
    """Standard error of the mean of ``values`` (n_chains, n_draws): sd sqrt(tau / N), tau by batch means.

    For the MD's kinetic temperature of a small molecule this is large: 6 of TiO2's 9 degrees of freedom
    are rigid-body motions driven by the thermostat alone, which decorrelate only at the friction's rate."""
    v = np.asarray(values, np.float64)
    return float(np.std(v) * math.sqrt(batch_means_iat(v) / v.size))


def thin_by_iat(values, iat: float) -> np.ndarray:
    """Every ceil(iat)-th draw of each chain of ``values`` (n_chains, n_draws), pooled (1-D)."""
    stride = max(1, int(math.ceil(iat))) if np.isfinite(iat) else 1
    return np.concatenate([np.asarray(c)[::stride] for c in np.asarray(values)])


def compare_observable(md_values, slhmc_values, md_calls: int, slhmc_calls: int, *, n_bootstrap: int = 1000,
                       seed: int = 0) -> ObservableComparison:
    """KS (thinned), W1 (block bootstrap) and ESS per target call of one observable.

    Args:
        md_values: (R, n) direct-MD draws per replica. slhmc_values: (C, m) SLHMC draws per chain.
        md_calls, slhmc_calls: target calls each sampler spent.

    Raises:
        ValueError: an observable without an ESS estimate (constant, non-finite, < 4 draws).
    """
    from scipy.stats import ks_2samp

    from slhmc_jax.analysis.diagnostics import chain_statistics
    from slhmc_jax.analysis.observables import wasserstein

    md, sl = np.asarray(md_values, np.float64), np.asarray(slhmc_values, np.float64)
    s_md, s_sl = chain_statistics(md, md_calls), chain_statistics(sl, slhmc_calls)
    if s_md is None or s_sl is None:
        raise ValueError("no ESS estimate for an observable (constant, non-finite or fewer than 4 draws per chain)")
    bm_md, bm_sl = batch_means_iat(md), batch_means_iat(sl)
    stride_md, stride_sl = np.nanmax([s_md.iat, bm_md]), np.nanmax([s_sl.iat, bm_sl])
    x_md, x_sl = thin_by_iat(md, stride_md), thin_by_iat(sl, stride_sl)
    ks = ks_2samp(x_md, x_sl)
    w = wasserstein(list(md), list(sl), iat=(max(1.0, stride_md), max(1.0, stride_sl)), n_bootstrap=n_bootstrap, seed=seed)
    ess_md, ess_sl = capped_ess(s_md.ess, md.size), capped_ess(s_sl.ess, sl.size)
    return ObservableComparison(
        ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue), wasserstein=tuple(float(v) for v in w),
        ess_md=ess_md, ess_slhmc=ess_sl, iat_md=s_md.iat, iat_slhmc=s_sl.iat,
        ess_per_call_md=ess_md / md_calls, ess_per_call_slhmc=ess_sl / slhmc_calls,
        ratio=(ess_sl / slhmc_calls) / (ess_md / md_calls), n_ks_md=int(x_md.size), n_ks_slhmc=int(x_sl.size),
        iat_batch_means_md=bm_md, iat_batch_means_slhmc=bm_sl)


def capped_ess(ess: float, n_draws: int) -> float:
    """min(ESS, n_draws): the ESS this comparison credits.

    An antithetic chain (negative lag-one autocorrelation, IAT < 1: e.g. HMC trajectories of half a
    vibrational period with a near-perfect proposal, x' ~ -x) has ESS > n_draws for the MEAN of the
    observable, but its draws do not describe the distribution better than independent ones; the
    KS / W1 comparison is about the distribution, so no sampler is credited with more effective
    draws than it has."""
    return float(min(ess, n_draws))


def frame_observables(positions, cell, numbers, pbc, energies, pairs, k: int) -> dict:
    """Per-frame scalar observables of chains of frames.

    Args:
        positions: (C, F, N, 3) A. cell: (3, 3) or (C, F, 3, 3) A. numbers: (N,). pbc: 3 bools.
        energies: (C, F) target energy, eV. pairs: element pairs (a, b). k: nearest neighbours (for a
            molecule at most the b atoms there are).

    Returns:
        {"nn_<a>-<b>_A": (C, F) mean distance of each a atom to its k nearest b atoms (A),
         "target_energy_eV": (C, F)}.
    """
    from ase.data import atomic_numbers

    from slhmc_jax.analysis.observables import nearest_neighbour_distances

    positions = np.asarray(positions, np.float64)
    C, F, N = positions.shape[:3]
    cells = np.broadcast_to(np.asarray(cell, np.float64), (C, F, 3, 3)).reshape(-1, 3, 3)
    numbers = np.asarray(numbers)
    out = {}
    for a, b in pairs:
        kk = int(k)
        if not any(pbc):
            kk = min(kk, int(np.sum(numbers == atomic_numbers[b])) - (a == b))
        d = nearest_neighbour_distances((positions.reshape(-1, N, 3), cells, numbers, tuple(pbc)), a, b, kk)
        out[f"nn_{a}-{b}_A"] = d.mean(axis=(1, 2)).reshape(C, F)
    out["target_energy_eV"] = np.asarray(energies, np.float64).reshape(C, F)
    return out


def comparisons(md_obs: dict, slhmc_obs: dict, md_calls: int, slhmc_calls: dict, *, n_bootstrap: int = 1000,
                seed: int = 0) -> dict:
    """{proposal: {observable: ObservableComparison}} for SLHMC runs ``slhmc_obs`` {proposal: {obs: (C, m)}}."""
    return {p: {name: compare_observable(md_obs[name], values[name], md_calls, slhmc_calls[p], n_bootstrap=n_bootstrap,
                                         seed=seed)
                for name in md_obs}
            for p, values in slhmc_obs.items()}


# ----------------------------------------------------------------------------------------
# the imperative shell: ``slhmc validate``


def md_settings(config: cfg.ValidationConfig) -> MDSettings:
    """The direct MD of a config: [validate] with [sampler]'s temperature and a seed offset from [run] seed."""
    v, w = config.validate, config.workflow
    return MDSettings(thermostat=v.thermostat, temperature_K=v.temperature_K or w.sampler.temperature_K,
                      timestep_fs=v.timestep_fs, n_steps=v.md_steps, n_replicas=v.replicas,
                      burn_in_steps=v.burn_in_steps, friction_per_ps=v.friction_per_ps, tau_fs=v.tau_fs,
                      seed=w.run.seed + 3000)


def _energy_only(target):
    """A copy of ``target`` that computes energies only (SLHMC's judge needs nothing else)."""
    import copy

    from slhmc_jax.targets.base import SingleEvaluationTarget

    if isinstance(target, SingleEvaluationTarget) and target.compute_forces:
        other = copy.copy(target)
        other.__dict__.pop("_warm_starts", None)
        other.compute_forces = False
        return other
    return target


def _write_text(path: Path, text: str) -> None:
    from slhmc_jax.app.workflow import _write_text as write

    write(path, text)


class Validation:
    """One ``slhmc validate`` run in a run directory (see the module docstring); rerun, it resumes:
    finished phases are read back, sampler runs continue from their checkpoints, and every target
    result already in the label store is reused."""

    def __init__(self, config: cfg.ValidationConfig, run_dir, *, foundation=None, target=None, progress: bool = True):
        from slhmc_jax.app import workflow as wf
        from slhmc_jax.targets.store import LabelStore
        from slhmc_jax.targets import as_target

        self.config = config
        self.w = config.workflow
        self.v = config.validate
        self.dir = Path(run_dir)
        self.progress = progress
        self.atoms = wf.build_structure(self.w.system)
        self.md = md_settings(config)
        self.md_cost_estimate_s = check_direct_md_feasible(len(self.atoms), self.md, self.w.cost.seconds_per_call,
                                                           max_atoms=self.v.max_atoms, max_md_cost_s=self.v.max_md_cost_s)
        warn_if_thermostat_not_ergodic(self.md, self.atoms.pbc)
        self._check_directory()
        self.store = LabelStore(self.dir / "labels.sqlite")
        self.target = as_target(target) if target is not None else wf.build_target(dataclasses.replace(self.w.target, dispatch="serial"))
        self.foundation = foundation if foundation is not None else self._load_foundation()
        self.runtime_path = self.dir / "runtime.json"  # seconds of each phase when it ran (a rerun reads them back)
        self.runtime: dict = json.loads(self.runtime_path.read_text()) if self.runtime_path.exists() else {}

    def _check_directory(self) -> None:
        """config.toml in the run directory: written on the first run, compared on a rerun (phases are read
        back, so another config there would mix two runs)."""
        v = self.v
        text = cfg.to_toml(self.w) + "[validate]\n" + "".join(
            f"{f.name} = {'false' if getattr(v, f.name) is None else cfg._toml_value(getattr(v, f.name))}\n"
            for f in dataclasses.fields(v))
        path = self.dir / "config.toml"
        if path.exists():
            if path.read_text() != text:
                raise cfg.ConfigError(f"{self.dir} holds a validation of another config ({path}); use a new --run-dir "
                                      f"or the same config to resume")
        else:
            _write_text(path, text)

    def _load_foundation(self):
        from slhmc_jax.models.foundations import load_foundation

        m = self.w.model
        z = sorted(set(int(v) for v in self.atoms.numbers))
        return load_foundation(m.foundation, dtype=m.dtype, hyperparameters=m.hyperparameters, seed=m.seed, atomic_numbers=z)

    def _log(self, text: str) -> None:
        if self.progress:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # ---- phases

    def rotation_check(self) -> dict | None:
        """:func:`check_rotation_invariance` of the start geometry (systems not periodic in all three
        directions only), its result kept in rotation_check.json (a rerun warns again from it)."""
        if fully_periodic(self.atoms.pbc):
            return None
        path = self.dir / "rotation_check.json"
        if path.exists():
            data = json.loads(path.read_text())
            RotationCheck(**data).warn_if_not_invariant()
            return data
        check = check_rotation_invariance(self.atoms, self.target, self.md.temperature_K, store=self.store)
        data = dataclasses.asdict(check)
        _write_text(path, json.dumps(data))
        return data

    def direct_md(self) -> dict:
        path = self.dir / "md.npz"
        if path.exists():
            return dict(np.load(path))
        self._log(f"direct target MD: {self.md.thermostat}, {self.md.n_replicas} replicas x ({self.md.burn_in_steps} burn-in "
                  f"+ {self.md.n_steps}) steps of {self.md.timestep_fs:g} fs ({self.md.n_force_calls} force calls, "
                  f"estimated {self.md_cost_estimate_s:.0f} s)")
        r = run_direct_md(self.atoms, self.target, self.md, store=self.store, progress=self.progress)
        from slhmc_jax.app.workflow import _write_npz

        arrays = dict(positions=r.positions, cell=r.cell, numbers=r.numbers, pbc=r.pbc, energies=r.energies,
                      forces=r.forces, kinetic_temperature_K=r.kinetic_temperature_K, n_target_calls=r.n_target_calls,
                      target_wall_s=r.target_wall_s, target_cpu_s=r.target_cpu_s, wall_s=r.wall_s)
        _write_npz(path, **arrays)
        return arrays

    def finetuned(self, md: dict):
        """The foundation fine-tuned on evenly spaced direct-MD frames (labels: their target energy and forces)."""
        from ase.calculators.singlepoint import SinglePointCalculator

        from slhmc_jax import finetune
        from slhmc_jax.app.workflow import _load_model, _save_model

        stem = self.dir / "models" / "finetuned"
        R, n = md["energies"].shape
        picks = np.unique(np.linspace(0, R * n - 1, min(self.v.finetune_structures, R * n)).round().astype(int))
        self.finetune_info = {"source": "direct_md", "structures": int(picks.size), "extra_target_calls": 0}
        info_path = self.dir / "models" / "finetuned.json"
        done = _load_model(self.foundation, stem)
        if done is not None:
            if info_path.exists():
                self.finetune_info = json.loads(info_path.read_text())
            return done
        train = []
        for i in picks:
            step, r = divmod(int(i), R)  # step-major: every replica, along the whole run
            a = self.atoms.copy()
            a.positions = md["positions"][r, step]
            a.calc = SinglePointCalculator(a, energy=float(md["energies"][r, step]), forces=md["forces"][r, step])
            train.append(a)
        self._log(f"fine-tuning the foundation on {len(train)} direct-MD frames (no extra target calls)")
        settings = dataclasses.replace(self.w.finetune, output_dir=str(self.dir / "finetune"), resume=True,
                                       progress=self.progress, seed=self.w.finetune.seed + self.w.run.seed)
        result = finetune.finetune(self.foundation, train, settings=settings)
        first, last = result.history[0], result.history[-1]
        self.finetune_info.update(valid_forces_rmse_eV_A=[first.valid_forces_rmse_eV_A, last.valid_forces_rmse_eV_A],
                                  valid_energy_rmse_eV_atom=[first.valid_energy_rmse_eV_atom, last.valid_energy_rmse_eV_atom])
        _write_text(info_path, json.dumps(_clean(self.finetune_info)))
        _save_model(result.potential, stem)
        return result.potential

    def slhmc(self, name: str, proposal, offset: int) -> dict:
        import slhmc_jax
        from slhmc_jax.app.workflow import _write_npz

        out = self.dir / f"slhmc_{name}" / "samples.npz"
        if out.exists():
            return dict(np.load(out))
        s = self.w.sampler
        settings = dataclasses.replace(s, n_steps=self.v.slhmc_steps or s.n_steps, seed=self.w.run.seed + s.seed + offset)
        self._log(f"SLHMC, {name} proposal: {settings.n_chains} chains x ({settings.warmup_steps} warm-up + "
                  f"{settings.n_burn_in} burn-in + {settings.n_steps}) steps")
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        res = slhmc_jax.sample(self.atoms, proposal, _energy_only(self.target), settings=settings, store=self.store,
                               labels="energy", checkpoint=out.parent / "sample.ckpt", progress=self.progress)
        d = res.diagnostics
        arrays = dict(positions=res.positions, cells=res.cells, energies=res.target_energies, accepted=res.accepted,
                      acceptance=res.acceptance_rate.mean(), n_target_calls=d.n_judged, target_wall_s=d.target_wall_s,
                      target_cpu_s=d.target_cpu_s, wall_s=time.perf_counter() - t0, timestep_fs=d.timestep_fs,
                      trajectory_steps=d.trajectory_steps)
        _write_npz(out, **arrays)
        return arrays

    # ---- the run

    def run(self) -> Path:
        t_start = time.perf_counter()
        self.rotation = self.rotation_check()
        md = self.direct_md()
        self.runtime["direct_md"] = float(md["wall_s"])
        self.finetune_info = None
        runs = {}
        for offset, name in enumerate(self.v.proposals):
            proposal = self.foundation
            if name == "finetuned":
                t0 = time.perf_counter()
                trained = (self.dir / "models" / "finetuned.params.pkl").exists()
                proposal = self.finetuned(md)
                if not trained:
                    self.runtime["finetune"] = time.perf_counter() - t0
            runs[name] = self.slhmc(name, proposal, offset)
            self.runtime[f"slhmc_{name}"] = float(runs[name]["wall_s"])
        t0 = time.perf_counter()
        e = self.w.evaluation
        pairs = tuple(tuple(p) for p in e.pairs)
        numbers, pbc = md["numbers"], tuple(bool(p) for p in md["pbc"])
        md_obs = frame_observables(md["positions"], md["cell"], numbers, pbc, md["energies"], pairs, e.k)
        sl_obs = {p: frame_observables(r["positions"], r["cells"], numbers, pbc, r["energies"], pairs, e.k)
                  for p, r in runs.items()}
        calls = {p: int(r["n_target_calls"]) for p, r in runs.items()}
        comp = comparisons(md_obs, sl_obs, int(md["n_target_calls"]), calls, n_bootstrap=e.n_bootstrap, seed=self.w.run.seed)
        self.runtime["analysis"] = time.perf_counter() - t0
        self.runtime["total"] = sum(v for k, v in self.runtime.items() if k not in ("total", "this_session"))
        self.runtime["this_session"] = time.perf_counter() - t_start
        _write_text(self.runtime_path, json.dumps(self.runtime))
        data = self.report_dict(md, runs, md_obs, sl_obs, comp)
        figures = write_figures(md_obs, sl_obs, comp, self.dir / "figures")
        data["figures"] = [str(Path(p).relative_to(self.dir)) for p, _ in figures]
        path = self.dir / "validation.json"
        _write_text(path, json.dumps(_clean(data), indent=2))
        _write_text(self.dir / "validation.md", report_markdown(data, figures))
        return path

    def report_dict(self, md, runs, md_obs, sl_obs, comp) -> dict:
        from slhmc_jax.analysis.report import _formula

        names = list(md_obs)
        ratio_s = {}
        md_sec = float(md["target_wall_s"])
        for p, c in comp.items():
            sec = float(runs[p]["target_wall_s"])
            ratio_s[p] = {o: (c[o].ess_slhmc / sec) / (c[o].ess_md / md_sec) if sec > 0 and md_sec > 0 else None
                          for o in names}
        first = next(iter(comp.values())) if comp else {}
        per = lambda f_md, f_sl: {"direct_md": {o: f_md(first[o]) for o in names} if first else {},  # noqa: E731
                                  **{p: {o: f_sl(c[o]) for o in names} for p, c in comp.items()}}
        s = self.w.sampler
        return {
            "ess_per_target_call_ratio": {p: {o: c[o].ratio for o in names} for p, c in comp.items()},
            "ess_per_target_second_ratio": ratio_s,
            "ks_pvalue": {p: {o: c[o].ks_pvalue for o in names} for p, c in comp.items()},
            "ks_statistic": {p: {o: c[o].ks_statistic for o in names} for p, c in comp.items()},
            "wasserstein": {p: {o: list(c[o].wasserstein) for o in names} for p, c in comp.items()},
            "ess": per(lambda c: c.ess_md, lambda c: c.ess_slhmc),
            "ess_per_target_call": per(lambda c: c.ess_per_call_md, lambda c: c.ess_per_call_slhmc),
            "iat_steps": per(lambda c: c.iat_md, lambda c: c.iat_slhmc),
            "iat_batch_means_steps": per(lambda c: c.iat_batch_means_md, lambda c: c.iat_batch_means_slhmc),
            "ks_samples": per(lambda c: c.n_ks_md, lambda c: c.n_ks_slhmc),
            "means": {"direct_md": {o: float(np.mean(v)) for o, v in md_obs.items()},
                      **{p: {o: float(np.mean(v)) for o, v in obs_.items()} for p, obs_ in sl_obs.items()}},
            "target_calls": {"direct_md": int(md["n_target_calls"]), **{p: int(r["n_target_calls"]) for p, r in runs.items()}},
            "acceptance": {p: float(r["acceptance"]) for p, r in runs.items()},
            "kinetic_temperature_K": {"mean": float(np.mean(md["kinetic_temperature_K"])),
                                      "standard_error": mean_standard_error(md["kinetic_temperature_K"]),
                                      "thermostat_K": self.md.temperature_K},
            "rotation_check": self.rotation,
            "runtime_s": {k: round(float(v), 2) for k, v in self.runtime.items()},
            "target_seconds": {"direct_md": {"wall": md_sec, "cpu": float(md["target_cpu_s"])},
                               **{p: {"wall": float(r["target_wall_s"]), "cpu": float(r["target_cpu_s"])} for p, r in runs.items()}},
            "finetune": self.finetune_info,
            "system": {"formula": _formula(md["numbers"]), "n_atoms": int(len(md["numbers"])), "pbc": [bool(v) for v in md["pbc"]]},
            "settings": {
                "config": self.w.source,
                "target": self.target.settings(),
                "md": dataclasses.asdict(self.md) | {"force_calls": self.md.n_force_calls,
                                                     "estimated_cost_s": self.md_cost_estimate_s},
                "sampler": {"temperature_K": s.temperature_K, "n_chains": s.n_chains,
                            "n_steps": self.v.slhmc_steps or s.n_steps, "warmup_steps": s.warmup_steps,
                            "burn_in_steps": s.n_burn_in,
                            **{f"{p}_timestep_fs": float(r["timestep_fs"]) for p, r in runs.items()},
                            **{f"{p}_trajectory_steps": int(r["trajectory_steps"]) for p, r in runs.items()}},
                "observables": {o: ("A" if o.endswith("_A") else "eV") for o in names},
            },
        }


def _clean(value):
    from slhmc_jax.analysis.report import _clean as clean

    return clean(value)


# ----------------------------------------------------------------------------------------
# figures and markdown (report.py's matplotlib conventions)


def write_figures(md_obs: dict, sl_obs: dict, comp: dict, directory) -> list:
    """One histogram overlay per observable: direct MD (filled) against each SLHMC proposal; [(path, title)]."""
    from slhmc_jax.analysis.report import _colours, _figure, _hist_edges, _save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, ref in md_obs.items():
        fig = _figure()
        ax = fig.add_subplot()
        ref = np.asarray(ref).ravel()
        arms = [(p, np.asarray(v[name]).ravel()) for p, v in sl_obs.items()]
        edges = _hist_edges([ref] + [v for _, v in arms], bins=40)
        ax.hist(ref, bins=edges, density=True, histtype="stepfilled", color="0.75", edgecolor="black", lw=1.5,
                label=f"direct target MD ({ref.size} frames, mean {ref.mean():.4g})")
        for (p, v), colour in zip(arms, _colours(len(arms))):
            c = comp[p][name]
            ax.hist(v, bins=edges, density=True, histtype="step", color=colour, lw=1.6,
                    label=f"SLHMC, {p} proposal (KS p {c.ks_pvalue:.2g}, ESS/call x{c.ratio:.3g})")
        unit = "Å" if name.endswith("_A") else "eV"
        title = f"{name}: direct target MD vs SLHMC"
        ax.set_title(title)
        ax.set_xlabel(f"{name[:-2] if name.endswith('_A') else name[:-3]} ({unit})")
        ax.set_ylabel(f"probability density (1/{unit})")
        ax.legend(fontsize=8)
        path = directory / f"validation_{name}.png"
        _save(fig, path)
        out.append((path, title))
    return out


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def report_markdown(data: dict, figures=()) -> str:
    """validation.md: what was run, the per-observable comparison table, runtimes, figures."""
    md = data["settings"]["md"]
    lines = [
        f"# SLHMC validation against direct target MD: {data['system']['formula']}",
        "",
        f"- target: {data['settings']['target']}",
        f"- direct MD: {md['thermostat']} at {md['temperature_K']:g} K, dt {md['timestep_fs']:g} fs, "
        f"{md['n_replicas']} replicas x ({md['burn_in_steps']} burn-in + {md['n_steps']}) steps, "
        f"{data['target_calls']['direct_md']} target force calls; mean kinetic temperature "
        f"{data['kinetic_temperature_K']['mean']:.1f} +- {data['kinetic_temperature_K'].get('standard_error', float('nan')):.1f} K",
        "- SLHMC: " + "; ".join(f"{p} proposal, acceptance {a:.3f}, {data['target_calls'][p]} target calls"
                               for p, a in data["acceptance"].items()),
    ]
    rot = data.get("rotation_check")
    if rot:
        verdict = "invariant" if RotationCheck(**rot).invariant else "NOT invariant"
        lines.append(f"- rotation check ({rot['n_target_calls']} energy calls, not charged): the target energy spans "
                     f"{1e3 * rot['energy_spread_eV']:.2f} meV ({rot['energy_spread_eV'] / rot['kT_eV']:.2f} kT) over rigid "
                     f"rotations of the start geometry: {verdict} (tolerance {ROTATION_TOLERANCE_KT:g} kT)")
    lines += [
        "",
        "KS: two-sample Kolmogorov-Smirnov test on draws thinned by their integrated autocorrelation time "
        "(p > 0.05: no evidence that SLHMC and direct MD sample different distributions). W1: Wasserstein distance "
        "[95% moving-block bootstrap interval]. Ratio: ESS per target call of SLHMC / that of direct MD "
        "(every call counted; MD force calls included).",
        "",
        "| proposal | observable | KS D | KS p | W1 [95%] | ESS MD | ESS SLHMC | ESS/call ratio | ESS/target-second ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p, values in data["ess_per_target_call_ratio"].items():
        for o, ratio in values.items():
            w = data["wasserstein"][p][o]
            lines.append(f"| {p} | {o} | {_fmt(data['ks_statistic'][p][o], 3)} | {_fmt(data['ks_pvalue'][p][o], 3)} | "
                         f"{_fmt(w[0], 3)} [{_fmt(w[1], 3)}, {_fmt(w[2], 3)}] | {_fmt(data['ess']['direct_md'][o])} | "
                         f"{_fmt(data['ess'][p][o])} | {_fmt(ratio, 3)} | {_fmt(data['ess_per_target_second_ratio'][p][o], 3)} |")
    if data.get("finetune"):
        f = data["finetune"]
        lines += ["", f"Fine-tuned proposal: the foundation fine-tuned on {f['structures']} direct-MD frames (their target "
                      f"energies and forces; {f['extra_target_calls']} extra target calls, not charged to its ratio)."]
    lines += ["", "## Runtime (s)", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in data["runtime_s"].items()]
    if figures:
        lines += ["", "## Figures", ""]
        for path, title in figures:
            lines += [f"### {title}", "", f"![{title}](figures/{Path(path).name})", ""]
    return "\n".join(lines) + "\n"


def run(config: cfg.ValidationConfig, run_dir, **kw) -> Path:
    """Run (or resume) ``slhmc validate`` of ``config`` in ``run_dir``; the path of validation.json."""
    return Validation(config, run_dir, **kw).run()
