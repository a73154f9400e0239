"""Velocity Verlet with ML forces as one ``lax.scan``, and Maxwell-Boltzmann momenta.

Units: positions Angstrom, masses amu, energies eV, time in ASE units internally
(``dt = timestep_fs * ase.units.fs``), so momenta p are amu * A / (ASE time) and the kinetic
energy K = sum_i |p_i|^2 / (2 m_i) is in eV.
"""

from __future__ import annotations

from typing import NamedTuple

import ase.units
import jax
import jax.numpy as jnp

from slhmc_jax import neighbours as nb
from slhmc_jax.calculator import energy_and_forces

FS = ase.units.fs
KB_EV_PER_K = ase.units.kB


class Trajectory(NamedTuple):
    """End point of one ML trajectory.

    Attributes:
        positions: (n_atoms, 3) Angstrom.
        momenta: (n_atoms, 3) amu*A/ASE-time.
        energy_start, energy_end: ML potential energy (eV) at the start and end.
        neighbours: the neighbour list at the end (None without a cutoff).
        overflow: True if any neighbour build overflowed (the trajectory must be re-run).
    """

    positions: jax.Array
    momenta: jax.Array
    energy_start: jax.Array
    energy_end: jax.Array
    neighbours: object
    overflow: jax.Array


def kinetic_energy(momenta, masses):
    """K = sum_i |p_i|^2 / (2 m_i) in eV; momenta (n_atoms, 3), masses (n_atoms,) amu."""
    return 0.5 * jnp.sum(momenta**2 / masses[:, None])


def maxwell_boltzmann(key, masses, temperature_K, dtype=jnp.float64):
    """Momenta p_i ~ N(0, m_i k_B T) per component, shape (n_atoms, 3)."""
    kT = KB_EV_PER_K * temperature_K
    z = jax.random.normal(key, (masses.shape[0], 3), dtype)
    return z * jnp.sqrt(masses * kT)[:, None].astype(dtype)


def velocity_verlet(potential, params, positions, momenta, cell, atomic_numbers, masses, n_steps: int, timestep_fs,
                    layout=None, neighbours=None) -> Trajectory:
    """Integrate n_steps of velocity Verlet (time reversible, symplectic) in one ``lax.scan``.

    p(t+dt/2) = p(t) + dt/2 F(x(t)); x(t+dt) = x(t) + dt p(t+dt/2)/m; p(t+dt) = p(t+dt/2) + dt/2 F(x(t+dt)).
    With a neighbour layout the list is updated (``neighbours.update``) before every force call;
    the overflow flag of every build is OR-ed into ``Trajectory.overflow``.
    """
    dt = timestep_fs * FS
    inv_m = (1.0 / masses)[:, None].astype(positions.dtype)

    def forces(x, nbrs):
        if layout is not None:
            nbrs = nb.update(layout, x, cell, nbrs)
        e, f = energy_and_forces(potential, params, x, cell, atomic_numbers, nbrs)
        ovf = nbrs.overflow if nbrs is not None else jnp.zeros((), bool)
        return e, f, nbrs, ovf

    e0, f0, nbrs0, ovf0 = forces(positions, neighbours)

    def step(carry, _):
        x, p, f, e, nbrs, ovf = carry
        p = p + 0.5 * dt * f
        x = x + dt * p * inv_m
        e, f, nbrs, o = forces(x, nbrs)
        p = p + 0.5 * dt * f
        return (x, p, f, e, nbrs, ovf | o), None

    (x, p, _, e, nbrs, ovf), _ = jax.lax.scan(step, (positions, momenta, f0, e0, nbrs0, ovf0), None, length=n_steps)
    return Trajectory(x, p, e0, e, nbrs, ovf)
