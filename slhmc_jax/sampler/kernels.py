"""SLHMC kernels, batched over chains: the HMC move and the NPT cell move as (propose, accept) pairs.

Every function here takes and returns chain states with a leading chain axis (a single chain is
the case n_chains = 1). ``propose`` is pure and compiled (the whole ML trajectory of every chain
in one call); the target energy of the proposed configurations is computed by the host *between*
``propose`` and ``accept`` (an impure, slow, external program); ``accept`` is pure again. Each
move owns its random keys: ``propose`` splits each chain's key into the key it carries on, the
key of its own draws and the key of the acceptance draw, which travels in the proposal.

HMC move (NVT). With x -> (x', p') the velocity-Verlet map Phi of the ML forces, Phi is volume
preserving (det dPhi = 1) and reversible (Phi(x', -p') = (x, -p)); p ~ N(0, m kT) is redrawn
every step (symmetric under p -> -p). Detailed balance for pi(x, p) ∝ exp(-beta [E_t(x) + K(p)])
then holds with the acceptance probability

    alpha = min(1, exp(-beta [E_t(x') + K(p') - E_t(x) - K(p)]))

whatever the ML energy is (it only enters through Phi), so the chain leaves
p(x) ∝ exp(-beta E_target(x)) invariant for ANY proposal model (Duane et al. 1987; Nagai et al.,
PRB 102, 041124 (2020)). A trajectory whose neighbour list overflowed is not Phi (pairs were
dropped) and is rejected here; the driver re-runs it with a larger list instead
(:func:`slhmc_jax.sampler.driver.sample`), so it is never used.

Divergent trajectories. A trajectory is divergent when it is not finite or its own energy error
|dH_ML| = |E_ML(x') + K(p') - E_ML(x) - K(p)| exceeds ``DIVERGENCE_KT`` kT (Stan's
convention): the ML dynamics blew up (dt too large, or a model that is NaN or wild somewhere).
It is rejected without asking the target. This keeps detailed balance: the reverse trajectory
(x', -p') -> (x, -p) has the same |dH_ML|, so rejecting on |dH_ML| > c restricts the proposal
symmetrically, like any event that is its own mirror image; and a non-finite end point is one no
reverse move could start from. The chain still samples exp(-beta E_t) exactly.

Cell move (NPT): see :func:`propose_cell`.

Delayed acceptance (Christen & Fox, J. Comput. Graph. Stat. 14, 795 (2005)). With a cheap
*screen* energy E_c (a cheaper functional, or any approximation of E_t), a move is decided in two
stages, and only proposals that pass the first reach the expensive target:

    stage one:  a1(z, z') = min(1, r_c),  r_c = pi_c(z') / pi_c(z),  pi_c ∝ exp(-beta H_c)
    stage two:  a2(z, z') = min(1, [pi(z') q1(z' -> z)] / [pi(z) q1(z -> z')])

where z = (x, p) (HMC) or (s, u) (cell move), H_c the screen's total Hamiltonian (the same
kinetic, P V and Jacobian terms as the target's, E_c in place of E_t) and q1(z -> z') =
q(z -> z') a1(z, z') the proposal as stage two sees it (the moves that passed stage one).
The HMC map and the cell walk are symmetric proposals (q(z -> z') = q(z' -> z), see above), and
a1(z', z) / a1(z, z') = 1 / r_c whether r_c < 1 or not, so

    a2 = min(1, (pi(z') / pi(z)) / r_c) = min(1, exp(-beta [(E_t(x') - E_t(x)) - (E_c(x') - E_c(x))]))

(kinetic energies, P dV and the volume Jacobian are common to both Hamiltonians and cancel).
Detailed balance: pi(z) q(z -> z') a1 a2 = min(pi(z) q a1(z, z'), pi(z') q a1(z', z)) is
symmetric in z <-> z', so the two-stage chain leaves pi (the target's distribution) invariant
exactly, whatever E_c is; a poor screen only rejects more. Stage one rejects divergent and
overflowed trajectories without any call, as the one-stage move does. The stage-one and
stage-two uniforms come from one split of the move's acceptance key (so the chain's own key
advances exactly as without a screen). The Metropolis decision of both stages is
:func:`metropolis`; :func:`screen_hmc` / :func:`screen_cell` give stage one, ``accept_hmc`` /
``accept_cell`` with ``screening=`` stage two.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from slhmc_jax import neighbours as nb
from slhmc_jax.sampler.integrators import kinetic_energy, maxwell_boltzmann, velocity_verlet_batch
from slhmc_jax.units import EV_PER_A3_IN_GPA, KB_EV_PER_K

DIVERGENCE_KT = 1000.0  # |dH_ML| above this many kT marks a divergent trajectory


class ChainState(NamedTuple):
    """Chains (leading axis n_chains on every leaf).

    Attributes:
        positions: (n_chains, n_atoms, 3) A. cell: (n_chains, 3, 3) A.
        target_energy: (n_chains,) eV (float64). key: (n_chains, 2) PRNG keys.
        n_accepted, n_steps: (n_chains,) int64 counters.
        screen_energy: (n_chains,) eV (float64), the delayed-acceptance screen's energy E_c of
            the current states (0 without a screen); kept so stage one costs one cheap call.
    """

    positions: jax.Array
    cell: jax.Array
    target_energy: jax.Array
    key: jax.Array
    n_accepted: jax.Array
    n_steps: jax.Array
    screen_energy: jax.Array


class Proposal(NamedTuple):
    """The ML-trajectory proposals of all chains (leading chain axis).

    Attributes:
        positions: (n_chains, n_atoms, 3) proposed positions x', Angstrom.
        kinetic_start, kinetic_end: (n_chains,) K(p) and K(p'), eV.
        ml_energy_start, ml_energy_end: (n_chains,) ML energies E_ML(x), E_ML(x'), eV.
        overflow: (n_chains,) bool, a neighbour build overflowed while the trajectory was finite
            (the proposal must not be used: re-run it with a larger layout).
        max_pairs: (n_chains,) int32, largest pair count of any build (sizes a new layout).
        max_per_atom: (n_chains,) int32, largest per-atom pair count of any build.
        n_rebuilds: (n_chains,) int32, neighbour-list rebuilds during the trajectory.
        divergent: (n_chains,) bool, the trajectory is not finite or |dH_ML| > DIVERGENCE_KT kT
            (rejected without a target call; see the module docstring).
        key: (n_chains, 2) the chains' keys after the proposal (the acceptance draws from them).
    """

    positions: jax.Array
    kinetic_start: jax.Array
    kinetic_end: jax.Array
    ml_energy_start: jax.Array
    ml_energy_end: jax.Array
    overflow: jax.Array
    max_pairs: jax.Array
    max_per_atom: jax.Array
    n_rebuilds: jax.Array
    divergent: jax.Array
    key: jax.Array

    @property
    def ml_energy_error(self):
        """Energy error of the ML trajectory itself, E_ML(x') + K(p') - E_ML(x) - K(p), eV."""
        return self.ml_energy_end + self.kinetic_end - self.ml_energy_start - self.kinetic_start


class CellProposal(NamedTuple):
    """Cell moves of all chains: positions (n_chains, n_atoms, 3) A and cell (n_chains, 3, 3) A
    after the move, log_jacobian (n_chains,) = (N + 1) ln(V'/V), and the acceptance keys."""

    positions: jax.Array
    cell: jax.Array
    log_jacobian: jax.Array
    key: jax.Array
    accept_key: jax.Array


class AcceptInfo(NamedTuple):
    """accepted: (n_chains,) bool; probability: (n_chains,) the Metropolis probability alpha (with a
    screen: 1[passed stage one] a2, an unbiased estimate of the two-stage probability a1 a2, since
    P(passed) = a1); delta_H: (n_chains,) eV, the target's energy change that one-stage
    alpha = min(1, exp(-beta delta_H)) weighs (+inf where no target energy was computed)."""

    accepted: jax.Array
    probability: jax.Array
    delta_H: jax.Array


class Screening(NamedTuple):
    """Stage one of delayed acceptance (see the module docstring), leading chain axis.

    Attributes:
        passed: (n_chains,) bool, the proposal goes on to the target.
        probability: (n_chains,) a1 = min(1, exp(-beta delta_H)) (0 for a divergent/overflowed one).
        delta_H: (n_chains,) eV, the screen's total-Hamiltonian change (kinetic, or P dV - kT ln J).
        energy: (n_chains,) eV, E_c of the proposed configurations.
        key: (n_chains, 2) the keys of the stage-two uniforms.
    """

    passed: jax.Array
    probability: jax.Array
    delta_H: jax.Array
    energy: jax.Array
    key: jax.Array


def init(positions, cells, target_energies, seed: int, screen_energies=None) -> ChainState:
    """Chains at ``positions`` (n_chains, n_atoms, 3) A in ``cells`` (n_chains, 3, 3) A with their
    target energies (n_chains,) eV (and screen energies, eV; default 0: no screen); chain c draws
    from ``split(PRNGKey(seed), n_chains)[c]``."""
    positions = jnp.asarray(positions)
    n = positions.shape[0]
    zeros = jnp.zeros((n,), jnp.int64)
    screen = jnp.zeros((n,), jnp.float64) if screen_energies is None else jnp.asarray(screen_energies, jnp.float64)
    return ChainState(positions, jnp.asarray(cells), jnp.asarray(target_energies, jnp.float64),
                      jax.random.split(jax.random.PRNGKey(seed), n), zeros, zeros, screen)


def metropolis(log_alpha, key):
    """One Metropolis decision per chain: accept iff ln u < ln alpha, u ~ U(0, 1) (float64).

    Args:
        log_alpha: (n_chains,) log acceptance ratio; a non-finite value (NaN, +-inf: an energy
            that is not a number) rejects.
        key: (n_chains, 2) PRNG keys of the uniform draws.

    Returns:
        (accepted (n_chains,) bool, probability (n_chains,) min(1, alpha), 0 where rejected outright).
    """
    log_alpha = jnp.asarray(log_alpha, jnp.float64)
    log_u = jnp.log(jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float64))(key))
    ok = jnp.isfinite(log_alpha)
    safe = jnp.where(ok, log_alpha, -jnp.inf)
    return (log_u < safe) & ok, jnp.where(ok, jnp.exp(jnp.minimum(safe, 0.0)), 0.0)


def acceptance_probability(delta_H, temperature_K):
    """min(1, exp(-beta delta_H)) elementwise (0 where delta_H is not finite)."""
    log_alpha = -jnp.asarray(delta_H, jnp.float64) / (KB_EV_PER_K * temperature_K)
    return jnp.where(jnp.isfinite(log_alpha), jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0)


def _split2(key):
    """(n_chains, 2) keys -> two (n_chains, 2) key arrays (each chain's key split in two)."""
    keys = jax.vmap(lambda k: jax.random.split(k, 2))(key)
    return keys[:, 0], keys[:, 1]


def _first_stage(log_alpha, energy, uniform_key, beta) -> Screening:
    """Stage one from the screen's ln a1; ``uniform_key`` is the key the one-stage move draws its
    uniform from: split once more into the stage-one and stage-two keys."""
    k1, k2 = _split2(uniform_key)
    passed, prob = metropolis(log_alpha, k1)
    return Screening(passed, prob, -log_alpha / beta, energy, k2)


def _second_stage(states: ChainState, screening: Screening, e_new, beta):
    """Stage two of delayed acceptance: ln a2 = -beta [(E_t' - E_t) - (E_c' - E_c)] where stage one
    passed (NaN, i.e. reject, elsewhere); the same for HMC and cell moves (see the module docstring)."""
    diff = (e_new - states.target_energy) - (screening.energy - states.screen_energy)
    return metropolis(jnp.where(screening.passed, -beta * diff, jnp.nan), screening.key)


def _decide(states: ChainState, screening: Screening | None, log_alpha, e_new, beta, uniform_key):
    """(accepted, probability, screen energy of the new states): one Metropolis stage on ``log_alpha``,
    or, after a screen, stage two (:func:`_second_stage`); the same for HMC and cell moves."""
    if screening is None:
        ok, prob = metropolis(log_alpha, uniform_key)
        return ok, prob, states.screen_energy
    ok, prob = _second_stage(states, screening, e_new, beta)
    return ok, prob, jnp.where(ok, screening.energy, states.screen_energy)


# ----------------------------------------------------------------------------------------
# HMC move


def propose_hmc(states: ChainState, potential, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs,
                layout=None, chain_batch_size=None, timestep_jitter=0.0) -> Proposal:
    """Draw p ~ MB(T) and run the ML trajectories of all chains (pure, jit-able).

    Fresh neighbour lists are built from each chain's positions, refreshed along the trajectory
    with ``neighbours.update_batch`` (only the chains that need it are rebuilt).

    Args:
        states: the chains. potential, params: the (frozen) ML proposal model.
        atomic_numbers: (n_atoms,) int. masses: (n_atoms,) amu. temperature_K: K.
        n_steps: velocity-Verlet steps (int or traced). timestep_fs: fs (float or traced).
        layout: NeighbourLayout for a potential with a cutoff (None without).
        chain_batch_size: chains per vmapped force group (see ``integrators.map_chains``).
        timestep_jitter: j (float or traced): chain c integrates with dt_c = dt (1 + j u_c),
            u_c ~ U(-1, 1) from its own key. u_c does not depend on the state, so each dt_c is a
            reversible, volume-preserving map and the mixture keeps detailed balance; j = 0 gives
            the chains of a run without jitter bit for bit.
    """
    keys = jax.vmap(lambda k: jax.random.split(k, 2))(states.key)
    p0 = jax.vmap(lambda k: maxwell_boltzmann(k, masses, temperature_K, states.positions.dtype))(keys[:, 1])
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), (), states.positions.dtype, -1.0, 1.0))(keys[:, 1])
    timestep_fs = timestep_fs * (1.0 + timestep_jitter * u)
    nbrs = None
    if layout is not None:
        nbrs = jax.vmap(lambda x, c: nb.build(layout, x, c))(states.positions, states.cell)
    traj = velocity_verlet_batch(potential, params, states.positions, p0, states.cell, atomic_numbers, masses, n_steps,
                                 timestep_fs, layout, nbrs, chain_batch_size)
    ke = jax.vmap(lambda p: kinetic_energy(p, masses))
    k0, k1 = ke(p0), ke(traj.momenta)
    error = traj.energy_end + k1 - traj.energy_start - k0
    finite = jnp.all(jnp.isfinite(traj.positions.reshape(traj.positions.shape[0], -1)), axis=1) & jnp.isfinite(error)
    divergent = ~finite | (jnp.abs(error) > DIVERGENCE_KT * KB_EV_PER_K * temperature_K)
    return Proposal(traj.positions, k0, k1, traj.energy_start, traj.energy_end, traj.overflow, traj.max_pairs,
                    traj.max_per_atom, traj.n_rebuilds, divergent, keys[:, 0])


def _hmc_log_ratio(proposal: Proposal, energy_start, energy_end, beta):
    """(ln alpha, delta_H): delta_H = E(x') + K(p') - E(x) - K(p) (eV) of one energy (target or
    screen), ln alpha = -beta delta_H, NaN (reject) for an overflowed or divergent proposal."""
    dH = (energy_end + proposal.kinetic_end.astype(jnp.float64)) - (energy_start + proposal.kinetic_start.astype(jnp.float64))
    return jnp.where(proposal.overflow | proposal.divergent, jnp.nan, -beta * dH), dH


def screen_hmc(states: ChainState, proposal: Proposal, proposed_screen_energy, temperature_K) -> Screening:
    """Stage one of delayed acceptance for the HMC move: a1 = min(1, exp(-beta [E_c' + K' - E_c - K])).

    Args:
        proposed_screen_energy: (n_chains,) E_c(x') in eV (+inf or NaN: not passed).
    """
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    e_c = jnp.asarray(proposed_screen_energy, jnp.float64)
    log_alpha, _ = _hmc_log_ratio(proposal, states.screen_energy, e_c, beta)
    return _first_stage(log_alpha, e_c, _split2(proposal.key)[1], beta)


def accept_hmc(states: ChainState, proposal: Proposal, proposed_target_energy, temperature_K,
               screening: Screening | None = None) -> tuple[ChainState, AcceptInfo]:
    """alpha = min(1, exp(-beta [E_t' + K' - E_t - K])) per chain, float64 (see the module docstring);
    with ``screening`` (stage one, :func:`screen_hmc`) the stage-two probability a2 instead.

    Args:
        proposed_target_energy: (n_chains,) E_t(x') in eV (+inf or NaN rejects).
        screening: None (one-stage move) or the stage-one verdict of these proposals.

    Returns:
        (new states, AcceptInfo). Overflowed and divergent proposals are always rejected.
    """
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    carry, key = _split2(proposal.key)
    e_new = jnp.asarray(proposed_target_energy, jnp.float64)
    log_alpha, dH = _hmc_log_ratio(proposal, states.target_energy, e_new, beta)
    ok, prob, screen_energy = _decide(states, screening, log_alpha, e_new, beta, key)
    new = ChainState(
        jnp.where(ok[:, None, None], proposal.positions, states.positions),
        states.cell,
        jnp.where(ok, e_new, states.target_energy),
        carry,
        states.n_accepted + ok.astype(jnp.int64),
        states.n_steps + 1,
        screen_energy,
    )
    return new, AcceptInfo(ok, prob, dH)


# ----------------------------------------------------------------------------------------
# cell move (NPT)


def propose_cell(states: ChainState, max_log_step, mode: str = "isotropic") -> CellProposal:
    """Cell moves for NPT SLHMC: a symmetric random walk in ln V or in ln a, ln b, ln c.

    Follows the NPT SLHMC scheme of Kobayashi et al., JCP 155, 034106 (2021): the SLHMC
    (fixed-cell) moves alternate with cell moves that scale all positions at fixed fractional
    coordinates; each move leaves the NPT distribution invariant, so their alternation does too.
    Every cell move is decided by the target energy alone (with a delayed-acceptance screen the
    screen first filters which moves reach the target: see the module docstring).

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
        states: the chains. max_log_step: d, the largest change of ln V (isotropic) or of each
            ln length. mode: "isotropic" or "orthorhombic".
    """
    if mode not in ("isotropic", "orthorhombic"):
        raise ValueError(f"cell move mode must be 'isotropic' or 'orthorhombic'; got {mode!r}")
    n_atoms = states.positions.shape[1]

    def one(x, cell, key):
        carry, k_move, k_accept = jax.random.split(key, 3)
        if mode == "isotropic":
            scale = jnp.exp(jax.random.uniform(k_move, (), minval=-max_log_step, maxval=max_log_step) / 3.0) * jnp.ones(3)
        else:
            scale = jnp.exp(jax.random.uniform(k_move, (3,), minval=-max_log_step, maxval=max_log_step))
        frac = x @ jnp.linalg.inv(cell)
        new_cell = cell * scale[:, None]
        return frac @ new_cell, new_cell, (n_atoms + 1) * jnp.sum(jnp.log(scale)), carry, k_accept

    return CellProposal(*jax.vmap(one)(states.positions, states.cell, states.key))


def _cell_log_ratio(states: ChainState, proposal: CellProposal, energy_start, energy_end, beta, pressure_GPa):
    """ln alpha = ln J - beta [E' + P V' - E - P V] of one energy (target or screen)."""
    p = pressure_GPa / EV_PER_A3_IN_GPA
    v0, v1 = jnp.abs(jnp.linalg.det(states.cell)), jnp.abs(jnp.linalg.det(proposal.cell))
    return proposal.log_jacobian - beta * (energy_end + p * v1 - energy_start - p * v0)


def screen_cell(states: ChainState, proposal: CellProposal, proposed_screen_energy, temperature_K, pressure_GPa
                ) -> Screening:
    """Stage one of delayed acceptance for the cell move: a1 = min(1, J exp(-beta [E_c' + P V' - E_c - P V])).

    Args:
        proposed_screen_energy: (n_chains,) E_c(x', h') in eV (+inf or NaN: not passed).
    """
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    e_c = jnp.asarray(proposed_screen_energy, jnp.float64)
    log_alpha = _cell_log_ratio(states, proposal, states.screen_energy, e_c, beta, pressure_GPa)
    return _first_stage(log_alpha, e_c, proposal.accept_key, beta)


def accept_cell(states: ChainState, proposal: CellProposal, proposed_target_energy, temperature_K, pressure_GPa,
                screening: Screening | None = None) -> tuple[ChainState, AcceptInfo]:
    """alpha = min(1, J exp(-beta [E_t' + P V' - E_t - P V])) per chain (see :func:`propose_cell`), float64;
    with ``screening`` (stage one, :func:`screen_cell`) the stage-two probability a2 instead.

    Args:
        proposed_target_energy: (n_chains,) E_t(x', h') eV. temperature_K: K.
        pressure_GPa: GPa (1 eV/A^3 = 160.21766 GPa).
        screening: None (one-stage move) or the stage-one verdict of these moves.

    Returns:
        (new states, AcceptInfo) with delta_H = E_t' + P V' - E_t - P V - kT log J (eV).
    """
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    e_new = jnp.asarray(proposed_target_energy, jnp.float64)
    log_alpha = _cell_log_ratio(states, proposal, states.target_energy, e_new, beta, pressure_GPa)
    ok, prob, screen_energy = _decide(states, screening, log_alpha, e_new, beta, proposal.accept_key)
    new = ChainState(
        jnp.where(ok[:, None, None], proposal.positions, states.positions),
        jnp.where(ok[:, None, None], proposal.cell, states.cell),
        jnp.where(ok, e_new, states.target_energy),
        proposal.key,
        states.n_accepted + ok.astype(jnp.int64),
        states.n_steps + 1,
        screen_energy,
    )
    return new, AcceptInfo(ok, prob, -log_alpha / beta)


# ----------------------------------------------------------------------------------------
# kernel factories: compiled once per (model, layout, shapes), shared by every run


class HMCKernel(NamedTuple):
    """``propose(states, params, timestep_fs, n_steps) -> Proposal``,
    ``screen(states, proposal, screen_energies) -> Screening`` (delayed acceptance, stage one) and
    ``accept(states, proposal, target_energies, screening=None) -> (states, AcceptInfo)``, each one
    compiled call."""

    propose: Callable
    accept: Callable
    screen: Callable


class CellKernel(NamedTuple):
    """``propose(states) -> CellProposal``, ``screen(states, proposal, screen_energies) -> Screening``
    and ``accept(states, proposal, target_energies, screening=None) -> (states, AcceptInfo)``."""

    propose: Callable
    accept: Callable
    screen: Callable


class _ByIdentity:
    """A hashable handle on a Potential (jit static argument keyed by object identity)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.obj is self.obj


@functools.partial(jax.jit, static_argnames=("potential", "layout", "chain_batch_size"))
def _propose_hmc_jit(states, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs, timestep_jitter, *,
                     potential, layout, chain_batch_size):
    return propose_hmc(states, potential.obj, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs, layout,
                       chain_batch_size, timestep_jitter)


_accept_hmc_jit = jax.jit(accept_hmc)
_propose_cell_jit = jax.jit(propose_cell, static_argnames=("mode",))
_accept_cell_jit = jax.jit(accept_cell)
_screen_hmc_jit = jax.jit(screen_hmc)
_screen_cell_jit = jax.jit(screen_cell)


def default_chain_batch_size(n_chains: int) -> int | None:
    """Chains per vmapped force group: all of them on an accelerator, groups of 4 on a CPU
    (measured: 72-atom MACE on 2 cores, 16 chains, groups of 2-4 are 1.3x faster than one vmap of 16)."""
    if jax.default_backend() != "cpu" or n_chains <= 4 or len(jax.local_devices()) > 1:
        return None  # accelerators want one wide batch; a sharded chain axis stays one vmap
    return 4


def hmc_kernel(potential, atomic_numbers, masses, temperature_K, *, layout=None, chain_batch_size="auto",
               timestep_jitter: float = 0.0) -> HMCKernel:
    """The HMC move of ``potential`` at ``temperature_K`` (K) for atoms of these numbers and masses (amu).

    Compiled once per (potential object, layout, chain_batch_size, shapes): temperature, timestep and
    trajectory length are traced, so warm-up tuning and repeated runs do not recompile.
    ``chain_batch_size``: chains per vmapped force group (None: all; "auto": :func:`default_chain_batch_size`).
    ``timestep_jitter``: j of :func:`propose_hmc` (traced too).
    """
    z, m = jnp.asarray(atomic_numbers), jnp.asarray(masses)
    t = jnp.asarray(temperature_K, jnp.float64)
    jitter = jnp.asarray(timestep_jitter, jnp.float64)
    handle = _ByIdentity(potential)

    def propose(states, params, timestep_fs, n_steps) -> Proposal:
        size = default_chain_batch_size(int(states.positions.shape[0])) if chain_batch_size == "auto" else chain_batch_size
        return _propose_hmc_jit(states, params, z, m, t, jnp.asarray(n_steps, jnp.int32), jnp.asarray(timestep_fs, jnp.float64),
                                jitter, potential=handle, layout=layout, chain_batch_size=size)

    def accept(states, proposal, target_energies, screening=None):
        return _accept_hmc_jit(states, proposal, jnp.asarray(target_energies, jnp.float64), t, screening)

    def screen(states, proposal, screen_energies) -> Screening:
        return _screen_hmc_jit(states, proposal, jnp.asarray(screen_energies, jnp.float64), t)

    return HMCKernel(propose, accept, screen)


def cell_kernel(temperature_K, pressure_GPa, max_log_step, mode: str = "isotropic") -> CellKernel:
    """The NPT cell move (:func:`propose_cell` / :func:`accept_cell`) at ``temperature_K`` (K) and
    ``pressure_GPa`` (GPa), steps of at most ``max_log_step`` in ln V (or each ln length)."""
    t, p, d = (jnp.asarray(v, jnp.float64) for v in (temperature_K, pressure_GPa, max_log_step))

    def propose(states) -> CellProposal:
        return _propose_cell_jit(states, d, mode=mode)

    def accept(states, proposal, target_energies, screening=None):
        return _accept_cell_jit(states, proposal, jnp.asarray(target_energies, jnp.float64), t, p, screening)

    def screen(states, proposal, screen_energies) -> Screening:
        return _screen_cell_jit(states, proposal, jnp.asarray(screen_energies, jnp.float64), t, p)

    return CellKernel(propose, accept, screen)
