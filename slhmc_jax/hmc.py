"""SLHMC kernel (NVT): pure ``init`` / ``propose`` / ``accept`` over a ``ChainState``.

The proposal is an ML (surrogate) velocity-Verlet trajectory from Maxwell-Boltzmann momenta;
the target energy alone decides: accept with min(1, exp(-beta [H' - H])),
H = E_target(x) + K(p), in float64. Velocity Verlet is volume preserving and time reversible,
and the momenta are redrawn (symmetric under p -> -p), so the chain leaves
p(x) ∝ exp(-beta E_target(x)) invariant for ANY proposal model (Duane et al. 1987;
Nagai et al., PRB 102, 041124 (2020)). Nothing here knows the number of chains: vmap
``propose`` and ``accept``. The one exception is :func:`propose_batch`, which runs the
trajectories of all chains in one loop so that neighbour lists are rebuilt only for the chains
that need it (``vmap(propose)`` with a neighbour list would rebuild every chain every step);
it gives each chain the same proposal as :func:`propose` (up to rounding after a rebuild).

Metropolis test (NVT). With x -> (x', p') the velocity-Verlet map Phi of the ML forces,
Phi is volume preserving (det dPhi = 1) and reversible (Phi(x', -p') = (x, -p)); p ~ N(0, m kT)
is redrawn every step. Detailed balance for pi(x, p) ∝ exp(-beta [E_t(x) + K(p)]) then holds
with the acceptance probability

    alpha = min(1, exp(-beta [E_t(x') + K(p') - E_t(x) - K(p)]))

whatever the ML energy is (it only enters through Phi). A trajectory whose neighbour list
overflowed is not Phi (pairs were dropped) and is rejected here; the driver re-runs it with a
larger list instead (``sampling.sample``), so it is never used.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from slhmc_jax.integrators import KB_EV_PER_K, kinetic_energy, maxwell_boltzmann, velocity_verlet, velocity_verlet_batch


class ChainState(NamedTuple):
    """positions (n_atoms, 3) A, cell (3, 3) A, target_energy eV (float64), key, counters."""

    positions: jax.Array
    cell: jax.Array
    target_energy: jax.Array
    key: jax.Array
    n_accepted: jax.Array
    n_steps: jax.Array


class Proposal(NamedTuple):
    """An ML-trajectory proposal of one chain (a leading chain axis when batched).

    Attributes:
        positions: (n_atoms, 3) proposed positions x', Angstrom.
        kinetic_start, kinetic_end: () K(p) and K(p'), eV.
        ml_energy_start, ml_energy_end: () ML energies E_ML(x), E_ML(x'), eV.
        overflow: () bool, a neighbour build overflowed (the proposal must not be used).
        max_pairs: () int32, largest pair count of any neighbour build (sizes a new layout).
        n_rebuilds: () int32, neighbour-list rebuilds during the trajectory.
        key: the chain's RNG key after the momentum draw.
    """

    positions: jax.Array
    kinetic_start: jax.Array
    kinetic_end: jax.Array
    ml_energy_start: jax.Array
    ml_energy_end: jax.Array
    overflow: jax.Array
    max_pairs: jax.Array
    n_rebuilds: jax.Array
    key: jax.Array

    @property
    def ml_energy_error(self):
        """Energy error of the ML trajectory itself, E_ML(x') + K(p') - E_ML(x) - K(p), eV."""
        return self.ml_energy_end + self.kinetic_end - self.ml_energy_start - self.kinetic_start


class AcceptInfo(NamedTuple):
    """accepted: () bool; probability: () the Metropolis probability alpha; delta_H: () eV."""

    accepted: jax.Array
    probability: jax.Array
    delta_H: jax.Array


def init(positions, cell, target_energy, key) -> ChainState:
    """A chain at ``positions`` (n_atoms, 3) A in ``cell`` (3, 3) A with its target energy (eV)."""
    return ChainState(jnp.asarray(positions), jnp.asarray(cell), jnp.asarray(target_energy, jnp.float64), key,
                      jnp.zeros((), jnp.int64), jnp.zeros((), jnp.int64))


def propose(state: ChainState, potential, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs,
            layout=None, neighbours=None) -> Proposal:
    """Draw p ~ MB(T), run the ML trajectory; pure, jit/vmap-able (without a neighbour list).

    Args:
        state: one chain. potential, params: the (frozen) ML proposal model.
        atomic_numbers: (n_atoms,) int. masses: (n_atoms,) amu. temperature_K: K.
        n_steps: velocity-Verlet steps (int or traced). timestep_fs: fs.
        layout, neighbours: neighbour layout and a list for ``state`` (potentials with a cutoff).
    """
    key, k_p, _ = jax.random.split(state.key, 3)
    p0 = maxwell_boltzmann(k_p, masses, temperature_K, state.positions.dtype)
    traj = velocity_verlet(potential, params, state.positions, p0, state.cell, atomic_numbers, masses, n_steps,
                           timestep_fs, layout, neighbours)
    return Proposal(traj.positions, kinetic_energy(p0, masses), kinetic_energy(traj.momenta, masses),
                    traj.energy_start, traj.energy_end, traj.overflow, traj.max_pairs, traj.n_rebuilds, key)


def propose_batch(states: ChainState, potential, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs,
                  layout=None, neighbours=None, chain_batch_size=None) -> Proposal:
    """:func:`propose` for all chains at once (leading chain axis on ``states`` and ``neighbours``).

    Same random draws as ``vmap(propose)``; the trajectories run in one loop with
    ``neighbours.update_batch`` (see the module docstring). Pure and jit-able.
    ``chain_batch_size``: see :func:`slhmc_jax.integrators.map_chains`.
    """
    keys = jax.vmap(lambda k: jax.random.split(k, 3))(states.key)
    p0 = jax.vmap(lambda k: maxwell_boltzmann(k, masses, temperature_K, states.positions.dtype))(keys[:, 1])
    traj = velocity_verlet_batch(potential, params, states.positions, p0, states.cell, atomic_numbers, masses, n_steps,
                                 timestep_fs, layout, neighbours, chain_batch_size)
    ke = jax.vmap(lambda p: kinetic_energy(p, masses))
    return Proposal(traj.positions, ke(p0), ke(traj.momenta), traj.energy_start, traj.energy_end, traj.overflow,
                    traj.max_pairs, traj.n_rebuilds, keys[:, 0])


def accept(state: ChainState, proposal: Proposal, proposed_target_energy, temperature_K) -> tuple[ChainState, AcceptInfo]:
    """Metropolis test alpha = min(1, exp(-beta [E_t' + K' - E_t - K])) in float64.

    Args:
        state: the chain before the move. proposal: from :func:`propose`.
        proposed_target_energy: () E_t(x') in eV (+inf or NaN rejects).
        temperature_K: K.

    Returns:
        (new state, AcceptInfo). Overflowed proposals are always rejected.
    """
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
    prob = jnp.where(jnp.isfinite(dH) & ~proposal.overflow, jnp.minimum(1.0, jnp.exp(-beta * jnp.maximum(dH, -1e3 / beta))), 0.0)
    return new, AcceptInfo(ok, prob, dH)


EV_PER_A3_IN_GPA = 160.21766208


def propose_cell(state: ChainState, key, max_log_step, mode: str = "isotropic"):
    """Cell move for NPT SLHMC: a symmetric random walk in ln V or in ln a, ln b, ln c.

    Follows the NPT SLHMC scheme of Kobayashi et al., JCP 155, 034106 (2021): the SLHMC
    (fixed-cell) moves of :func:`propose`/:func:`accept` alternate with cell moves that scale all
    positions at fixed fractional coordinates; each move leaves the NPT distribution invariant,
    so their alternation does too. Every cell move is judged by the target energy alone.

    Derivation. The isothermal-isobaric distribution of N atoms in a cell h (rows are lattice
    vectors, V = |det h|) is

        pi(x, h) dx dh ∝ exp(-beta [E_t(x, h) + P V]) dx dh.

    With fractional coordinates s (x = s h, per atom) dx = V^N ds, so in (s, h)
    pi ∝ V^N exp(-beta [E_t + P V]).

    * "isotropic": h' = (V'/V)^{1/3} h with u = ln V, u' = u + delta, delta ~ U(-d, d)
      (symmetric in u). dV = V du, so the density in (s, u) is V^{N+1} exp(-beta [E_t + P V]).
    * "orthorhombic" (h = diag(a, b, c) or any h whose rows are scaled independently):
      (u_a, u_b, u_c) = (ln a, ln b, ln c), each u_k' = u_k + delta_k, delta_k ~ U(-d, d)
      independently (symmetric); da db dc = abc du_a du_b du_c = V du, so the density in
      (s, u) is again V^{N+1} exp(-beta [E_t + P V]) with V = abc: a, b and c fluctuate
      independently (rutile's a and c separately).

    For a symmetric proposal in (s, u) with s fixed, Metropolis-Hastings accepts with

        alpha = min(1, (V'/V)^{N+1} exp(-beta [E_t(x', h') + P V' - E_t(x, h) - P V])),

    i.e. log J = (N + 1) ln(V'/V) = (N + 1) sum_k ln(scale_k), which this function returns and
    :func:`accept_cell` applies. Leaving J out samples exp(-beta [E_t + P V]) in (s, u), i.e.
    V^{-(N+1)} times the right density (wrong; the tests show it).

    Args:
        state: one chain. key: PRNG key of the move.
        max_log_step: d, the largest change of ln V (isotropic) or of each ln length.
        mode: "isotropic" or "orthorhombic".

    Returns:
        (positions' (n_atoms, 3) A, cell' (3, 3) A, log_jacobian ()).
    """
    n = state.positions.shape[0]
    if mode == "isotropic":
        dlnv = jax.random.uniform(key, (), minval=-max_log_step, maxval=max_log_step)
        scale = jnp.exp(dlnv / 3.0) * jnp.ones(3)
    elif mode == "orthorhombic":
        scale = jnp.exp(jax.random.uniform(key, (3,), minval=-max_log_step, maxval=max_log_step))
    else:
        raise ValueError(f"cell move mode must be 'isotropic' or 'orthorhombic'; got {mode!r}")
    frac = state.positions @ jnp.linalg.inv(state.cell)
    cell = state.cell * scale[:, None]
    log_j = (n + 1) * jnp.sum(jnp.log(scale))
    return frac @ cell, cell, log_j


def accept_cell(state: ChainState, positions, cell, log_jacobian, proposed_target_energy, temperature_K, pressure_GPa, key):
    """alpha = min(1, J exp(-beta [E_t' + P V' - E_t - P V])) (see :func:`propose_cell`), float64.

    Args:
        positions, cell, log_jacobian: from :func:`propose_cell`.
        proposed_target_energy: () E_t(x', h') eV. temperature_K: K.
        pressure_GPa: GPa (1 eV/A^3 = 160.21766 GPa). key: PRNG key of the uniform draw.

    Returns:
        (new state, AcceptInfo) with delta_H = E_t' + P V' - E_t - P V - kT log J (eV).
    """
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    p = pressure_GPa / EV_PER_A3_IN_GPA
    v0, v1 = jnp.abs(jnp.linalg.det(state.cell)), jnp.abs(jnp.linalg.det(cell))
    e_new = jnp.asarray(proposed_target_energy, jnp.float64)
    log_a = log_jacobian - beta * (e_new + p * v1 - state.target_energy - p * v0)
    ok = (jnp.log(jax.random.uniform(key, (), jnp.float64)) < log_a) & jnp.isfinite(log_a)
    new = state._replace(
        positions=jnp.where(ok, positions, state.positions),
        cell=jnp.where(ok, cell, state.cell),
        target_energy=jnp.where(ok, e_new, state.target_energy),
        n_accepted=state.n_accepted + ok.astype(jnp.int64),
        n_steps=state.n_steps + 1,
    )
    prob = jnp.where(jnp.isfinite(log_a), jnp.exp(jnp.minimum(log_a, 0.0)), 0.0)
    return new, AcceptInfo(ok, prob, -log_a / beta)
