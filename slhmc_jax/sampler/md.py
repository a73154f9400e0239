"""Direct MD on a target's own forces: the reference ``slhmc validate`` checks SLHMC against.

Velocity Verlet with the TARGET's forces under a thermostat that samples the canonical ensemble
exactly as dt -> 0 (:class:`MDSettings`):

- "baoab": Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013), per step
  p += dt/2 F; x += dt/2 p/m; p = c p + sqrt((1 - c^2) m kT) xi (c = exp(-gamma dt));
  x += dt/2 p/m; F = F_target(x); p += dt/2 F;
- "bussi": stochastic velocity rescaling (Bussi, Donadio & Parrinello 2007), symmetric
  splitting: p *= alpha(dt/2); velocity Verlet step; p *= alpha(dt/2)
  (:func:`slhmc_jax.sampler.integrators.bussi_factor`).

The thermostat rules are pure functions (:mod:`slhmc_jax.sampler.integrators`, jitted here in
:func:`md_kernel`: BlackJAX's ``init`` / ``step`` split around the host's force call); the target
is called on the host once per MD step with all replicas in one batch (warm starts per replica),
every result committed to the label store before it is used, every configuration counted
(:func:`run_direct_md`). Start: Maxwell-Boltzmann momenta, ``burn_in_steps`` discarded. The
recorded steps are an :class:`MDResult`, a :class:`~slhmc_jax.sampler.trajectory.Trajectory` (every
frame ``accepted``: MD moves every step) with the forces, kinetic temperatures and costs.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import precision  # noqa: F401  (float64)
from slhmc_jax.checks import FieldCheck
from slhmc_jax.sampler import integrators as ig
from slhmc_jax.sampler.trajectory import Trajectory
from slhmc_jax.units import FS, KB_EV_PER_K

THERMOSTATS = ("baoab", "bussi")


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
        needs = f"the {self.thermostat!r} thermostat needs a temperature: "
        check = FieldCheck(self, label=lambda name: (needs if name == "temperature_K" else "") + name)
        check.choice("thermostat", THERMOSTATS)
        check.number("temperature_K", 0.0, lo_open=True, expected="a positive number of kelvin")
        for name in ("timestep_fs", "friction_per_ps", "tau_fs"):
            check.number(name, 0.0, lo_open=True, expected="a positive number")
        for name, low in (("n_steps", 1), ("n_replicas", 1), ("burn_in_steps", 0)):
            check.integer(name, low)

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
    dt = settings.timestep_fs * FS
    kT = KB_EV_PER_K * settings.temperature_K
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
    return 2.0 * kinetic / (3 * p.shape[-2] * KB_EV_PER_K)


# ----------------------------------------------------------------------------------------
# the host loop


@dataclasses.dataclass(frozen=True, kw_only=True)
class MDResult(Trajectory):
    """The recorded (post burn-in) steps of every replica: a :class:`Trajectory` (chains = replicas,
    fixed cell, ``target_energies`` eV, ``accepted`` all True, ``store_keys``) with what MD adds.

    Attributes:
        forces: (R, n_steps, N, 3) target forces, eV/A.
        kinetic_temperature_K: (R, n_steps) 2 K / (3 N k_B) after each step.
        judged: configurations judged, start and burn-in included (identical start structures count
            once; the cost without a store).
        target_evaluations: of those, evaluated by the target (the rest came from the store).
        target_wall_s, target_cpu_s: seconds in target batches (wall; this process's CPU).
        wall_s: the whole run.
    """

    forces: np.ndarray
    kinetic_temperature_K: np.ndarray
    judged: int
    target_evaluations: int
    target_wall_s: float
    target_cpu_s: float
    wall_s: float

    def __post_init__(self):
        super().__post_init__()
        forces = np.asarray(self.forces, np.float64)
        if forces.shape != self.positions.shape:
            raise ValueError(f"forces must have the positions' shape {self.positions.shape}; got {forces.shape}")
        object.__setattr__(self, "forces", forces)
        object.__setattr__(self, "kinetic_temperature_K", np.asarray(self.kinetic_temperature_K, np.float64))


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

    from slhmc_jax.targets.base import with_forces
    from slhmc_jax.targets.stack import as_target
    from slhmc_jax.targets.store import cached

    t_start = time.perf_counter()
    target = with_forces(as_target(target))
    judge = cached(target, store)
    masses = np.asarray(atoms.get_masses())
    kernel = md_kernel(settings, masses)
    R = settings.n_replicas
    chains = list(range(R))
    counters = {"calls": 0, "wall": 0.0, "cpu": 0.0}

    def forces_at(x):
        """(energies (R,) eV, forces (R, N, 3) eV/A, store keys (R,)) of the replicas at positions x."""
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
        keys = [judge.key(a) for a in configs]
        counters["calls"] += len(set(keys))
        if any(r.forces_eV_A is None for r in results):
            raise ValueError("the target returned no forces: direct MD needs a target with forces")
        return (np.array([r.energy_eV for r in results]), np.stack([np.asarray(r.forces_eV_A) for r in results]),
                keys)

    key = jax.random.PRNGKey(settings.seed)
    key, k0 = jax.random.split(key)
    x = jnp.asarray(np.broadcast_to(atoms.positions, (R, len(atoms), 3)).copy())
    p = kernel.init(k0, R)
    energy, f, _ = forces_at(np.asarray(x))
    f = jnp.asarray(f)
    n_total = settings.burn_in_steps + settings.n_steps
    rec_x, rec_e, rec_f, rec_t, rec_k = [], [], [], [], []
    with tqdm(total=n_total, disable=not progress, desc="direct MD") as bar:
        for step in range(n_total):
            x, p_half, key = kernel.before_force(x, p, f, key)
            energy, f_np, keys = forces_at(np.asarray(x))
            f = jnp.asarray(f_np)
            p, key = kernel.after_force(p_half, f, key)
            if step >= settings.burn_in_steps:
                rec_x.append(np.asarray(x))
                rec_e.append(energy)
                rec_f.append(f_np)
                rec_t.append(kinetic_temperature_K(p, masses))
                rec_k.append(keys)
            bar.update(1)
    t = lambda v: np.ascontiguousarray(np.moveaxis(np.stack(v), 0, 1))  # noqa: E731  (steps, R) -> (R, steps)
    positions = t(rec_x)
    return MDResult(positions=positions, cells=np.broadcast_to(np.asarray(atoms.cell.array), positions.shape[:2] + (3, 3)).copy(),
                    atomic_numbers=np.asarray(atoms.numbers), pbc=np.asarray(atoms.pbc, bool), target_energies=t(rec_e),
                    accepted=np.ones(positions.shape[:2], bool), store_keys=np.asarray(rec_k).T,
                    forces=t(rec_f), kinetic_temperature_K=t(rec_t), judged=int(counters["calls"]),
                    target_evaluations=int(judge.target_evaluations), target_wall_s=float(counters["wall"]),
                    target_cpu_s=float(counters["cpu"]), wall_s=time.perf_counter() - t_start)
