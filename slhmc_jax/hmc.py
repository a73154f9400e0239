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


EV_PER_A3_IN_GPA = 160.21766208


def propose_cell(state: ChainState, key, max_log_step, mode: str = "isotropic"):
    """Symmetric random walk of the cell in ln V ("isotropic") or ln a, ln b, ln c ("orthorhombic").

    Positions are scaled at fixed fractional coordinates. Returns (positions', cell', log_jacobian).

    Derivation (NPT, ensemble measure dx dV e^{-beta(E(x,V) + P V)}): with fractional
    coordinates s (x = s h) dx = det(h)^N ds = V^N ds. Isotropic: the proposal is symmetric in
    u = ln V and dV = V du, so the target density in (s, u) is V^{N+1} e^{-beta(E + P V)} and the
    Metropolis ratio carries J = (V'/V)^{N+1}, i.e. log J = (N+1) ln(V'/V). Orthorhombic
    (h = diag(a, b, c), symmetric walk in ln a, ln b, ln c, da db dc = abc du dv dw):
    J = (V'/V)^{N+1} as well, with V = abc; the sampled measure is
    (abc)^N e^{-beta(E + P abc)} da db dc, so a, b, c fluctuate independently.
    Accept with min(1, J exp(-beta [E_t' + P V' - E_t - P V])) (see :func:`accept_cell`);
    alternate these moves with NVT HMC moves (each leaves the NPT distribution invariant).
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
    """min(1, J exp(-beta [E_t' + P V' - E_t - P V])), P in GPa (1 eV/A^3 = 160.21766 GPa)."""
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
    return new, ok
