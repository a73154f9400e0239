"""SLHMC kernel (NVT): pure ``init`` / ``propose`` / ``accept`` over a ``ChainState``.

The proposal is an ML (surrogate) velocity-Verlet trajectory from Maxwell-Boltzmann momenta;
the target energy alone decides: accept with min(1, exp(-beta [H' - H])),
H = E_target(x) + K(p), in float64. Velocity Verlet is volume preserving and time reversible,
and the momenta are redrawn (symmetric under p -> -p), so the chain leaves
p(x) ∝ exp(-beta E_target(x)) invariant for ANY proposal model (Duane et al. 1987;
Nagai et al., PRB 102, 041124 (2020)). Nothing here knows the number of chains: vmap
``propose`` and ``accept``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slhmc_jax.integrators import KB_EV_PER_K, kinetic_energy, maxwell_boltzmann, velocity_verlet


class ChainState(NamedTuple):
    """positions (n_atoms, 3) A, cell (3, 3) A, target_energy eV (float64), key, counters."""

    positions: jax.Array
    cell: jax.Array
    target_energy: jax.Array
    key: jax.Array
    n_accepted: jax.Array
    n_steps: jax.Array


class Proposal(NamedTuple):
    """positions' (n_atoms, 3) A, K and K' (eV), ML energies before/after (eV), overflow flag."""

    positions: jax.Array
    kinetic_start: jax.Array
    kinetic_end: jax.Array
    ml_energy_start: jax.Array
    ml_energy_end: jax.Array
    overflow: jax.Array
    key: jax.Array


def init(positions, cell, target_energy, key) -> ChainState:
    return ChainState(jnp.asarray(positions), jnp.asarray(cell), jnp.asarray(target_energy, jnp.float64), key,
                      jnp.zeros((), jnp.int64), jnp.zeros((), jnp.int64))


def propose(state: ChainState, potential, params, atomic_numbers, masses, temperature_K, n_steps: int, timestep_fs,
            layout=None, neighbours=None) -> Proposal:
    """Draw p ~ MB(T), run the ML trajectory; pure, jit/vmap-able."""
    key, k_p, k_acc = jax.random.split(state.key, 3)
    p0 = maxwell_boltzmann(k_p, masses, temperature_K, state.positions.dtype)
    traj = velocity_verlet(potential, params, state.positions, p0, state.cell, atomic_numbers, masses, n_steps,
                           timestep_fs, layout, neighbours)
    return Proposal(traj.positions, kinetic_energy(p0, masses), kinetic_energy(traj.momenta, masses),
                    traj.energy_start, traj.energy_end, traj.overflow, key)


def accept(state: ChainState, proposal: Proposal, proposed_target_energy, temperature_K) -> tuple[ChainState, jax.Array]:
    """Metropolis test min(1, exp(-beta [E_t' + K' - E_t - K])) in float64; returns (new state, accepted)."""
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    key, k_u = jax.random.split(proposal.key)
    e_new = jnp.asarray(proposed_target_energy, jnp.float64)
    dH = (e_new + proposal.kinetic_end.astype(jnp.float64)) - (state.target_energy + proposal.kinetic_start.astype(jnp.float64))
    log_u = jnp.log(jax.random.uniform(k_u, (), jnp.float64))
    ok = (log_u < -beta * dH) & jnp.isfinite(dH) & ~proposal.overflow
    new = ChainState(
        jnp.where(ok, proposal.positions, state.positions),
        state.cell,
        jnp.where(ok, e_new, state.target_energy),
        key,
        state.n_accepted + ok.astype(jnp.int64),
        state.n_steps + 1,
    )
    return new, ok
