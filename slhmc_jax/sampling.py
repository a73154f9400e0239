"""``slhmc_jax.sample``: many SLHMC chains, the ML trajectory compiled, the target the only judge."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import hmc
from slhmc_jax import neighbours as nb
from slhmc_jax.targets.base import TargetEvaluationError

EV_PER_A3_IN_GPA = 160.21766208


@dataclasses.dataclass
class SampleResult:
    """positions (n_chains, n_steps, n_atoms, 3) A; cells (n_chains, n_steps, 3, 3) A;
    target_energies (n_chains, n_steps) eV; acceptance_rate (n_chains,); samples: list per chain
    of ase.Atoms with a SinglePointCalculator carrying the target energy; diagnostics dict;
    proposal_hash: sha256 of the frozen proposal parameters."""

    positions: np.ndarray
    cells: np.ndarray
    target_energies: np.ndarray
    acceptance_rate: np.ndarray
    samples: list
    diagnostics: dict
    proposal_hash: str


def proposal_hash(params) -> str:
    """sha256 over the parameter pytree leaves' bytes, shapes and dtypes."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _as_target(target):
    """Target / callable(list of Atoms) -> energies, or an ASE calculator, as one batch function."""
    if hasattr(target, "get_potential_energy") and not callable(target):
        def evaluate(atoms_list):
            out = []
            for a in atoms_list:
                a = a.copy()
                a.calc = target
                out.append(a.get_potential_energy())
            return np.asarray(out, np.float64)
        return evaluate
    if callable(target):
        return lambda atoms_list: np.asarray(target(atoms_list), np.float64).reshape(len(atoms_list))
    raise ValueError(f"target must be a slhmc_jax Target, an ASE calculator or a callable on a list of Atoms; got {type(target)}")


def _atoms_list(template, positions, cells):
    out = []
    for x, c in zip(positions, cells):
        a = template.copy()
        a.calc = None
        a.positions = np.asarray(x, np.float64)
        a.cell = np.asarray(c, np.float64)
        out.append(a)
    return out


def _evaluate_batch(evaluate, configs, max_retries, on_failure, n_chains):
    """Retry transient TargetEvaluationError; then raise, or return +inf energies (reject)."""
    for attempt in range(max_retries + 1):
        try:
            return evaluate(configs)
        except TargetEvaluationError:
            if attempt == max_retries and on_failure == "raise":
                raise
    return np.full(n_chains, np.inf)


def _record(history, state, ok, ml_error):
    history["positions"].append(np.asarray(state.positions))
    history["cells"].append(np.asarray(state.cell))
    history["energies"].append(np.asarray(state.target_energy))
    history["accepted"].append(np.asarray(ok))
    history["ml_error"].append(np.asarray(ml_error))


def _save(path, payload):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sample(atoms, proposal, target, *, temperature_K, n_chains, n_steps, trajectory_steps, timestep_fs, seed,
           ensemble="nvt", pressure_GPa=None, checkpoint=None, on_failure="raise", max_retries=2,
           skin_A=0.5, progress=True, max_log_cell_step=0.05,
           warmup_steps=0, target_acceptance=0.65) -> SampleResult:
    """Run ``n_chains`` SLHMC chains for ``n_steps`` Metropolis steps each.

    Each step: one compiled call proposes for all chains (Maxwell-Boltzmann momenta, velocity
    Verlet on ``proposal`` for ``trajectory_steps`` steps of ``timestep_fs``); the host sends the
    batch of proposed configurations to ``target`` in one query; every chain accepts with
    min(1, exp(-beta [E_t' + K' - E_t - K])) in float64. The chains sample exp(-E_target/kT)
    whatever the proposal is. The proposal parameters are frozen; their hash is recorded.

    Failed target evaluations (``TargetEvaluationError``) are retried ``max_retries`` times
    (transient failures). Then ``on_failure="raise"`` stops (the checkpoint holds the state
    before the failed step, so the run can be resumed with other settings); ``"reject"`` rejects
    the proposals of the failed batch, which restricts every chain to the region where the target
    converges (the stationary distribution is the target's, truncated to that region).

    Args:
        atoms: ase.Atoms, the start of every chain.
        proposal: a Potential (uses ``proposal.params``).
        target: a Target, an ASE calculator, or callable(list of ase.Atoms) -> energies (eV).
        temperature_K: K. n_chains, n_steps, trajectory_steps: ints. timestep_fs: fs. seed: int.
        ensemble: "nvt", "npt" (isotropic) or "npt_orthorhombic": NPT alternates, step by step,
            an NVT SLHMC move and a cell move (random walk in ln V or ln a, ln b, ln c of at most
            ``max_log_cell_step``, positions scaled at fixed fractional coordinates, accepted with
            min(1, (V'/V)^(N+1) exp(-beta [E_t' + P V' - E_t - P V])); see ``hmc.propose_cell``).
        pressure_GPa: GPa, for NPT.
        warmup_steps: NVT steps run before production to tune ``timestep_fs`` toward
            ``target_acceptance`` (dt *= exp(acceptance - target) per step); warm-up states are
            not recorded and the timestep is frozen for production (tuned value in diagnostics).
        checkpoint: path; the full state is written atomically after every step and a run
            started with an existing checkpoint resumes from it (bit-identical to an
            uninterrupted run with the same seed).
    """
    if ensemble not in ("nvt", "npt", "npt_orthorhombic"):
        raise ValueError(f"ensemble must be 'nvt', 'npt' (isotropic) or 'npt_orthorhombic'; got {ensemble!r}")
    if ensemble != "nvt" and pressure_GPa is None:
        raise ValueError("NPT needs pressure_GPa")
    if on_failure not in ("raise", "reject"):
        raise ValueError(f"on_failure must be 'raise' or 'reject'; got {on_failure!r}")
    for name, v in (("n_chains", n_chains), ("n_steps", n_steps), ("trajectory_steps", trajectory_steps)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v}")
    if not (temperature_K > 0 and timestep_fs > 0):
        raise ValueError(f"temperature_K and timestep_fs must be positive; got {temperature_K}, {timestep_fs}")
    evaluate = _as_target(target)
    params = proposal.params
    phash = proposal_hash(params)
    z = jnp.asarray(atoms.numbers)
    masses = jnp.asarray(atoms.get_masses())
    x0 = np.asarray(atoms.positions, np.float64)
    cell0 = np.asarray(atoms.cell.array, np.float64)
    pbc = tuple(bool(b) for b in atoms.pbc)

    layout = None
    if proposal.cutoff is not None:
        layout, _ = nb.allocate(x0[None].repeat(n_chains, 0), cell0[None].repeat(n_chains, 0), pbc,
                                float(proposal.cutoff), skin_A, batch=True)

    state = None
    history = {"positions": [], "cells": [], "energies": [], "accepted": [], "ml_error": []}
    if checkpoint is not None and os.path.exists(checkpoint):
        with open(checkpoint, "rb") as f:
            saved = pickle.load(f)
        if saved["proposal_hash"] != phash:
            raise ValueError("checkpoint was written with other proposal parameters (hash differs)")
        state = jax.tree_util.tree_map(jnp.asarray, hmc.ChainState(*saved["state"]))
        history = saved["history"]
    if state is None:
        e0 = evaluate([atoms.copy()])[0]
        keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
        state = jax.vmap(lambda k: hmc.init(jnp.asarray(x0), jnp.asarray(cell0), e0, k))(keys)
        history["warmup_done"] = False

    def _propose(states, layout, dt):
        def one(s):
            nbrs = nb.build(layout, s.positions, s.cell) if layout is not None else None
            return hmc.propose(s, proposal, params, z, masses, temperature_K, trajectory_steps, dt, layout, nbrs)
        return jax.vmap(one)(states)

    propose = jax.jit(_propose, static_argnums=1)
    mode = "orthorhombic" if ensemble == "npt_orthorhombic" else "isotropic"

    @jax.jit
    def cell_propose(states):
        def one(s):
            key, k1, k2 = jax.random.split(s.key, 3)
            xn, cn, lj = hmc.propose_cell(s._replace(key=key), k1, max_log_cell_step, mode)
            return xn, cn, lj, key, k2
        return jax.vmap(one)(states)

    cell_accept = jax.jit(jax.vmap(
        lambda s, x, c, lj, e, key, k2: hmc.accept_cell(s._replace(key=key), x, c, lj, e, temperature_K, pressure_GPa, k2)))
    accept = jax.jit(jax.vmap(lambda s, p, e: hmc.accept(s, p, e, temperature_K)))

    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_steps, initial=len(history["energies"]), disable=not progress, desc="SLHMC")
    except ImportError:  # pragma: no cover
        bar = None
    dt = history.get("timestep_fs", timestep_fs)
    if warmup_steps and not history.get("warmup_done", True):
        for _ in range(warmup_steps):
            prop = propose(state, layout, dt)
            e_new = _evaluate_batch(evaluate, _atoms_list(atoms, np.asarray(prop.positions), np.asarray(state.cell)),
                                    max_retries, on_failure, n_chains)
            state, ok = accept(state, prop, jnp.asarray(e_new))
            dt = float(dt * np.exp(np.mean(np.asarray(ok)) - target_acceptance))
        state = state._replace(n_accepted=jnp.zeros_like(state.n_accepted), n_steps=jnp.zeros_like(state.n_steps))
    history["warmup_done"] = True
    history["timestep_fs"] = dt
    while len(history["energies"]) < n_steps:
        if ensemble != "nvt" and len(history["energies"]) % 2 == 1:
            xn, cn, lj, key, k2 = cell_propose(state)
            e_new = _evaluate_batch(evaluate, _atoms_list(atoms, np.asarray(xn), np.asarray(cn)), max_retries, on_failure, n_chains)
            state, ok = cell_accept(state, xn, cn, lj, jnp.asarray(e_new), key, k2)
            _record(history, state, ok, np.zeros(n_chains))
            if checkpoint is not None:
                _save(checkpoint, {"state": tuple(np.asarray(a) for a in state), "history": history, "proposal_hash": phash})
            if bar is not None:
                bar.update(1)
            continue
        prop = propose(state, layout, dt)
        while layout is not None and bool(np.any(np.asarray(prop.overflow))):
            layout, _ = nb.reallocate(layout, np.asarray(state.positions), np.asarray(state.cell), batch=True)
            prop = propose(state, layout, dt)  # a wrong trajectory is never used
        configs = _atoms_list(atoms, np.asarray(prop.positions), np.asarray(state.cell))
        e_new = _evaluate_batch(evaluate, configs, max_retries, on_failure, n_chains)
        state, ok = accept(state, prop, jnp.asarray(e_new))
        _record(history, state, ok, np.asarray(prop.ml_energy_end + prop.kinetic_end - prop.ml_energy_start - prop.kinetic_start))
        if checkpoint is not None:
            _save(checkpoint, {"state": tuple(np.asarray(a) for a in state), "history": history, "proposal_hash": phash})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    pos = np.stack(history["positions"], 1)
    cells = np.stack(history["cells"], 1)
    energies = np.stack(history["energies"], 1)
    accepted = np.stack(history["accepted"], 1)
    from slhmc_jax.observables import mcmc_diagnostics

    diag = mcmc_diagnostics(energies, accepted, n_target_calls=n_chains * n_steps)
    diag["timestep_fs"] = dt
    diag["ml_energy_error_eV"] = np.stack(history["ml_error"], 1)
    from ase.calculators.singlepoint import SinglePointCalculator

    samples = []
    for c in range(n_chains):
        chain = []
        for a, e in zip(_atoms_list(atoms, pos[c], cells[c]), energies[c]):
            a.calc = SinglePointCalculator(a, energy=float(e))
            chain.append(a)
        samples.append(chain)
    return SampleResult(pos, cells, energies, accepted.mean(1), samples, diag, phash)
