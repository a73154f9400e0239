"""``slhmc_jax.sample``: many SLHMC chains, the ML trajectory compiled, the target the only judge.

One Metropolis step for all chains:

1. one compiled call (:func:`slhmc_jax.hmc.propose_batch`, sharded over the chain axis when
   there are several local devices) draws momenta and runs the ML trajectories; if any
   neighbour list overflowed, the host grows the layout (``neighbours.reallocate``) and re-runs
   the same trajectories (same keys): an overflowed trajectory is never used;
2. the host sends the batch of proposed configurations to the target in one query;
3. one compiled call applies the Metropolis test of every chain (float64).

NPT alternates (step by step) such a move with a cell move (:func:`slhmc_jax.hmc.propose_cell`).

Checkpoints (``checkpoint=path``): ``path`` is a small state file (chain states with their RNG
keys and energies, counters, tuned timestep and trajectory length, neighbour layout), replaced
atomically (write, fsync, ``os.replace``) after every step, warm-up included; the recorded
samples go to ``path + ".records"``, an append-only file of fixed-size binary records (one per
production step, fsynced before the state file is replaced). Each step costs O(1) I/O. On
resume the records file is truncated to the number of steps the state file counts, so a kill
at any instant (even between the two writes) resumes bit-identically.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import hmc
from slhmc_jax import neighbours as nb
from slhmc_jax.integrators import KB_EV_PER_K
from slhmc_jax.targets.base import TargetEvaluationError

EV_PER_A3_IN_GPA = 160.21766208
_CHECKPOINT_VERSION = 2
_MAX_REALLOCATIONS = 10


@dataclasses.dataclass
class SampleResult:
    """The production samples of every chain (warm-up steps are not recorded).

    Attributes:
        positions: (n_chains, n_steps, n_atoms, 3) Angstrom.
        cells: (n_chains, n_steps, 3, 3) Angstrom.
        target_energies: (n_chains, n_steps) eV.
        acceptance_rate: (n_chains,) over all production moves (HMC and cell moves).
        samples: list per chain of ase.Atoms with a SinglePointCalculator carrying the target energy.
        diagnostics: ``acceptance``, ``acceptance_per_chain``, ``mcmc`` (:class:`slhmc_jax.diagnostics.MCMCDiagnostics`), ``ess``, ``iat``, ``rhat`` of the target energy, plus
            ``timestep_fs`` and ``trajectory_steps`` (the fixed production values),
            ``ml_energy_error_eV`` (n_chains, n_steps; 0 on cell moves), ``move``
            (n_steps,) 0 = HMC, 1 = cell move, ``warmup`` (tuning history),
            ``neighbour_reallocations``, ``edge_slots`` (final slots per atom, None without)
            and ``edge_slot_regrowths``.
        proposal_hash: sha256 of the frozen proposal parameters.
    """

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


def _record_dtype(n_chains: int, n_atoms: int) -> np.dtype:
    """One production step of all chains, as a fixed-size binary record."""
    return np.dtype([
        ("positions", "<f8", (n_chains, n_atoms, 3)),
        ("cells", "<f8", (n_chains, 3, 3)),
        ("energies", "<f8", (n_chains,)),
        ("accepted", "?", (n_chains,)),
        ("probability", "<f8", (n_chains,)),
        ("ml_energy_error", "<f8", (n_chains,)),
        ("move", "<i1"),
        ("timestep_fs", "<f8"),
        ("trajectory_steps", "<i8"),
    ])


class _Checkpoint:
    """State file (replaced atomically) + append-only records file (see the module docstring)."""

    def __init__(self, path, dtype: np.dtype):
        self.path = os.fspath(path)
        self.records_path = self.path + ".records"
        self.dtype = dtype

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> tuple[dict, list]:
        with open(self.path, "rb") as f:
            host = pickle.load(f)
        n = host["n_recorded"]
        size = self.dtype.itemsize
        records = []
        if n:
            with open(self.records_path, "r+b") as f:
                f.truncate(n * size)  # drop a record written after the last state file (kill in between)
                data = np.frombuffer(f.read(n * size), dtype=self.dtype)
            if data.shape[0] != n:
                raise ValueError(f"checkpoint records file {self.records_path} holds {data.shape[0]} steps; the state file counts {n}")
            records = [data[i].copy() for i in range(n)]
        elif os.path.exists(self.records_path):
            with open(self.records_path, "r+b") as f:
                f.truncate(0)
        return host, records

    def append(self, record: np.ndarray) -> None:
        with open(self.records_path, "ab") as f:
            f.write(record.tobytes())
            f.flush()
            os.fsync(f.fileno())

    def save(self, host: dict) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(host, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _chain_sharding(n_chains: int):
    """NamedSharding over the leading (chain) axis across all local devices, or None."""
    devices = jax.local_devices()
    if len(devices) < 2 or n_chains % len(devices):
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("chains",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("chains"))


def shard_chains(tree, n_chains: int):
    """Place every leaf (leading axis = chains) across the local devices (no-op on one device)."""
    sharding = _chain_sharding(n_chains)
    if sharding is None:
        return tree
    return jax.tree_util.tree_map(lambda a: jax.device_put(a, sharding), tree)


def _grow_layout(layout, states, prop):
    """A larger layout after a trajectory overflowed (capacity from the largest pair count seen)."""
    new, _ = nb.reallocate(layout, np.asarray(states.positions), np.asarray(states.cell), batch=True)
    need = int(math.ceil(1.25 * int(np.max(np.asarray(prop.max_pairs))))) + 1
    repl = {"capacity": max(new.capacity, need)}
    if new == layout and repl["capacity"] == layout.capacity:
        # nothing explained by the pair count or the start cells: a bin filled up mid-trajectory
        if layout.method == "cells":
            repl["bin_capacity"] = 2 * layout.bin_capacity
        else:
            repl["n_images"] = tuple(n + 1 if p else 0 for n, p in zip(layout.n_images, layout.pbc))
    return dataclasses.replace(new, **repl)


def _finite(prop) -> np.ndarray:
    """(n_chains,) bool: the trajectory's end positions, energies and momenta are all finite."""
    x = np.asarray(prop.positions)
    return np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1) & np.isfinite(np.asarray(prop.ml_energy_error))


def _uses_edge_slots(potential) -> bool:
    """True for models with receiver-major edge slots (MACE: ``with_max_neighbours``)."""
    return callable(getattr(potential, "with_max_neighbours", None)) and potential.cutoff is not None


def default_edge_slots(potential, layout, x0, cell0):
    """Slots per atom for a run: the user's choice, else 1.25 x the most edges any atom has at the start + 2."""
    if not _uses_edge_slots(potential) or layout is None:
        return None
    if potential.max_neighbours is not None:
        return int(potential.max_neighbours)
    from slhmc_jax.models.mace.model import max_edges_per_atom

    nbrs = nb.build(layout, jnp.asarray(x0), jnp.asarray(cell0))
    k = max_edges_per_atom(nbrs, x0, cell0, float(potential.cutoff))
    return min(int(math.ceil(1.25 * k)) + 2, int(layout.capacity))


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
def _propose_chains_jit(states, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs, *, potential, layout,
                        chain_batch_size):
    nbrs = None
    if layout is not None:
        nbrs = jax.vmap(lambda x, c: nb.build(layout, x, c))(states.positions, states.cell)
    return hmc.propose_batch(states, potential.obj, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs,
                             layout, nbrs, chain_batch_size)


def default_chain_batch_size(n_chains: int) -> int | None:
    """Chains per vmapped force group: all of them on an accelerator, groups of 4 on a CPU
    (measured: 72-atom MACE on 2 cores, 16 chains, groups of 2-4 are 1.3x faster than one vmap of 16)."""
    if jax.default_backend() != "cpu" or n_chains <= 4 or len(jax.local_devices()) > 1:
        return None  # accelerators want one wide batch; a sharded chain axis stays one vmap
    return 4


def propose_chains(states, potential, params, atomic_numbers, masses, temperature_K, n_steps, timestep_fs, layout=None,
                   chain_batch_size="auto"):
    """One compiled call: fresh neighbour lists and ML trajectories of every chain.

    Compiled once per (potential object, layout, shapes): temperature, timestep and trajectory
    length are traced, so warm-up tuning and repeated ``sample`` calls do not recompile.

    Args:
        states: ChainState with a leading chain axis. potential, params: the proposal model.
        atomic_numbers: (n_atoms,) int. masses: (n_atoms,) amu. temperature_K: K.
        n_steps: velocity-Verlet steps. timestep_fs: fs. layout: NeighbourLayout or None.
        chain_batch_size: chains per vmapped force group (None: all; "auto": :func:`default_chain_batch_size`).

    Returns:
        hmc.Proposal with a leading chain axis (check ``overflow`` before using it).
    """
    if chain_batch_size == "auto":
        chain_batch_size = default_chain_batch_size(int(states.positions.shape[0]))
    return _propose_chains_jit(states, params, jnp.asarray(atomic_numbers), jnp.asarray(masses),
                               jnp.asarray(temperature_K, jnp.float64), jnp.asarray(n_steps, jnp.int32),
                               jnp.asarray(timestep_fs, jnp.float64), potential=_ByIdentity(potential), layout=layout,
                               chain_batch_size=chain_batch_size)


def _acceptance_from_dH(dH, beta):
    """Mean Metropolis probability min(1, exp(-beta dH)) over chains (non-finite dH counts 0)."""
    dH = np.asarray(dH, np.float64)
    p = np.where(np.isfinite(dH), np.exp(-beta * np.clip(dH, 0.0, None)), 0.0)
    return float(np.mean(p))


def sample(atoms, proposal, target, *, temperature_K, n_chains, n_steps, trajectory_steps, timestep_fs, seed,
           ensemble="nvt", pressure_GPa=None, checkpoint=None, on_failure="raise", max_retries=2,
           skin_A=0.5, progress=True, max_log_cell_step=0.05,
           warmup_steps=0, target_acceptance=0.65, max_trajectory_steps=None, neighbour_layout=None) -> SampleResult:
    """Run ``n_chains`` SLHMC chains for ``n_steps`` production Metropolis steps each.

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

    Warm-up (``warmup_steps`` > 0): the same moves, not recorded, tuning the timestep dt and the
    trajectory duration tau = L dt (Robbins-Monro on logs, gain g_t = 1.5 t^-0.5 at the t-th HMC
    warm-up step, pooled over chains):

        ln dt  += g_t (a_ML - a_ML*),   a_ML = <min(1, exp(-beta dH_ML))>, a_ML* = (1 + a*) / 2
        ln tau += g_t (a - a*),          a = <min(1, exp(-beta dH))>,       a* = target_acceptance

    dH_ML is the energy error of the ML trajectory itself (integration error: dt controls it) and
    dH the full SLHMC error (ML-vs-target mismatch, which grows with tau). L = round(tau / dt),
    clipped to [1, max_trajectory_steps] (default 4 * trajectory_steps); tau is kept within
    [dt, max_trajectory_steps * dt]. While tau / dt sits at a bound of that range (the mismatch
    cannot be traded against the trajectory length any more, e.g. a proposal so good that
    acceptance stays high for the longest trajectory), dt follows a instead:
    ln dt += g_t (a - a*). dt is capped at 10 * timestep_fs. Production uses the averages of ln dt and ln tau over the second half of
    the warm-up, fixed for the whole production phase (a chain whose kernel changes with its
    own history is not stationary).

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
        checkpoint: path of the state file (records in ``path + ".records"``); written after every
            step; a run started with an existing checkpoint resumes from it (bit-identical to an
            uninterrupted run with the same seed) and may extend ``n_steps``.
        skin_A: Verlet skin of the proposal's neighbour list, A.
        warmup_steps, target_acceptance, max_trajectory_steps: see above.
        neighbour_layout: a ``neighbours.NeighbourLayout`` to start from (default: allocated from
            ``atoms`` with ``skin_A``); it grows on overflow like the default one.

    Edge slots (MACE and other models with ``with_max_neighbours``): the proposal runs with
    receiver-major edge slots (the fast CPU path), 1.25 x the largest edge count of the start
    structure + 2 unless the model already has slots. A trajectory in which an atom outgrows
    them (NaN ML energy) is re-run with the same keys and 1.5 x the slots, like a neighbour-list
    overflow; the slot count is part of the checkpoint, so a resumed run uses the same one.
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
    if int(warmup_steps) != warmup_steps or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative integer; got {warmup_steps}")
    if not (temperature_K > 0 and timestep_fs > 0):
        raise ValueError(f"temperature_K and timestep_fs must be positive; got {temperature_K}, {timestep_fs}")
    if not 0 < target_acceptance < 1:
        raise ValueError(f"target_acceptance must be in (0, 1); got {target_acceptance}")
    max_traj = int(max_trajectory_steps or 4 * trajectory_steps)
    if max_traj < 1:
        raise ValueError(f"max_trajectory_steps must be a positive integer; got {max_trajectory_steps}")
    n_chains, n_steps, warmup_steps = int(n_chains), int(n_steps), int(warmup_steps)
    evaluate = _as_target(target)
    params = proposal.params
    phash = proposal_hash(params)
    z = jnp.asarray(atoms.numbers)
    masses = jnp.asarray(atoms.get_masses())
    x0 = np.asarray(atoms.positions, np.float64)
    cell0 = np.asarray(atoms.cell.array, np.float64)
    pbc = tuple(bool(b) for b in atoms.pbc)
    n_atoms = x0.shape[0]
    beta = 1.0 / (KB_EV_PER_K * temperature_K)
    settings = dict(n_chains=n_chains, n_atoms=n_atoms, numbers=tuple(int(v) for v in atoms.numbers), seed=seed,
                    temperature_K=temperature_K, ensemble=ensemble, pressure_GPa=pressure_GPa,
                    trajectory_steps=int(trajectory_steps), timestep_fs=float(timestep_fs), warmup_steps=warmup_steps,
                    target_acceptance=target_acceptance, max_trajectory_steps=max_traj,
                    max_log_cell_step=max_log_cell_step, skin_A=skin_A)
    rec_dtype = _record_dtype(n_chains, n_atoms)
    ckpt = _Checkpoint(checkpoint, rec_dtype) if checkpoint is not None else None

    if ckpt is not None and ckpt.exists():
        host, records = ckpt.load()
        if host.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint {checkpoint} has version {host.get('version')}; expected {_CHECKPOINT_VERSION}")
        if host["proposal_hash"] != phash:
            raise ValueError("checkpoint was written with other proposal parameters (hash differs)")
        diff = {k: (host["settings"].get(k), v) for k, v in settings.items() if host["settings"].get(k) != v}
        if diff:
            raise ValueError(f"checkpoint was written with other settings (saved, now): {diff}")
        state = hmc.ChainState(*(jnp.asarray(a) for a in host["state"]))
    else:
        e0 = evaluate([atoms.copy()])[0]
        keys = jax.random.split(jax.random.PRNGKey(seed), n_chains)
        state = jax.vmap(lambda k: hmc.init(jnp.asarray(x0), jnp.asarray(cell0), e0, k))(keys)
        layout = None
        if neighbour_layout is not None:
            layout = neighbour_layout
        elif proposal.cutoff is not None:
            layout, _ = nb.allocate(np.repeat(x0[None], n_chains, 0), np.repeat(cell0[None], n_chains, 0), pbc,
                                    float(proposal.cutoff), skin_A, batch=True)
        host = dict(version=_CHECKPOINT_VERSION, proposal_hash=phash, settings=settings, n_warmup=0, n_recorded=0,
                    log_dt=math.log(timestep_fs), log_tau=math.log(timestep_fs * trajectory_steps),
                    tuning_history=[], timestep_fs=float(timestep_fs), trajectory_steps=int(trajectory_steps),
                    layout=layout, n_reallocations=0, state=None,
                    edge_slots=default_edge_slots(proposal, layout, x0, cell0), n_slot_regrowths=0)
        records = []
    state = shard_chains(state, n_chains)

    slotted = {}  # edge slots -> the proposal evaluated with them (one object each: compiled once)

    def proposal_with_slots(slots):
        if slots is None:
            return proposal
        if slots not in slotted:
            slotted[slots] = proposal.with_max_neighbours(slots)
        return slotted[slots]

    def propose(states, params, layout, dt, n_traj):
        pot = proposal_with_slots(host.get("edge_slots"))
        return propose_chains(states, pot, params, z, masses, temperature_K, n_traj, dt, layout)

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

    def hmc_move(state, dt, n_traj):
        layout = host["layout"]
        dt_arr, n_arr = dt, n_traj
        prop = propose(state, params, layout, dt_arr, n_arr)
        tries = 0
        while True:
            # a wrong trajectory is never used: the same keys are re-run with more room
            if host.get("edge_slots") is not None and host["edge_slots"] < layout.capacity and not np.all(_finite(prop)):
                # an atom gained more edges than it has slots: the model's energy and forces are
                # NaN from there on (never a truncated energy); checked first because NaN positions
                # can also flag the neighbour list. With as many slots as pairs a NaN is the
                # dynamics' own (and is rejected).
                host["edge_slots"] = min(int(math.ceil(1.5 * host["edge_slots"])), int(layout.capacity))
                host["n_slot_regrowths"] += 1
            elif layout is not None and bool(np.any(np.asarray(prop.overflow))):
                tries += 1
                if tries > _MAX_REALLOCATIONS:
                    raise RuntimeError(f"neighbour list still overflows after {_MAX_REALLOCATIONS} reallocations: {layout}")
                layout = _grow_layout(layout, state, prop)
                host["layout"] = layout
                host["n_reallocations"] += 1
            else:
                break
            prop = propose(state, params, layout, dt_arr, n_arr)
        # a trajectory that blew up (NaN) is rejected without asking the target; its slot in the
        # batch carries the chain's current state so that batch slot k stays chain k
        finite = _finite(prop)
        proposed = np.where(finite[:, None, None], np.asarray(prop.positions), np.asarray(state.positions))
        configs = _atoms_list(atoms, proposed, np.asarray(state.cell))
        e_new = np.where(finite, _evaluate_batch(evaluate, configs, max_retries, on_failure, n_chains), np.inf)
        state, info = accept(state, prop, jnp.asarray(e_new))
        return state, info, np.asarray(prop.ml_energy_error)

    def cell_move(state):
        xn, cn, lj, key, k2 = cell_propose(state)
        e_new = _evaluate_batch(evaluate, _atoms_list(atoms, np.asarray(xn), np.asarray(cn)), max_retries, on_failure, n_chains)
        state, info = cell_accept(state, xn, cn, lj, jnp.asarray(e_new), key, k2)
        return state, info

    def is_cell_step(i):
        return ensemble != "nvt" and i % 2 == 1

    def save(state):
        if ckpt is not None:
            host["state"] = tuple(np.asarray(a) for a in state)
            ckpt.save(host)

    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=warmup_steps + n_steps, initial=host["n_warmup"] + len(records), disable=not progress, desc="SLHMC")
    except ImportError:  # pragma: no cover
        bar = None

    # ---- warm-up: tune dt and tau = L dt; nothing recorded
    dt_max = 10.0 * timestep_fs
    while host["n_warmup"] < warmup_steps:
        w = host["n_warmup"]
        if is_cell_step(w):
            state, _ = cell_move(state)
        else:
            dt = math.exp(host["log_dt"])
            n_traj = int(min(max(round(math.exp(host["log_tau"]) / dt), 1), max_traj))
            state, info, ml_err = hmc_move(state, dt, n_traj)
            a = _acceptance_from_dH(np.asarray(info.delta_H), beta)
            a_ml = _acceptance_from_dH(ml_err, beta)
            t = len(host["tuning_history"]) + 1
            gain = 1.5 * t ** -0.5
            raw_L = math.exp(host["log_tau"]) / dt
            if 1.0 < raw_L < max_traj:
                signal = a_ml - 0.5 * (1.0 + target_acceptance)  # dt controls the integration error
            else:
                signal = a - target_acceptance  # tau is pinned at a bound of L: dt takes over
            log_dt = min(host["log_dt"] + gain * signal, math.log(dt_max))
            log_tau = host["log_tau"] + gain * (a - target_acceptance)
            # keep tau reachable with 1 <= L <= max_traj at the new dt
            log_tau = min(max(log_tau, log_dt), log_dt + math.log(max_traj))
            host["tuning_history"].append((dt, n_traj, a, a_ml))
            host["log_dt"], host["log_tau"] = log_dt, log_tau
            host.setdefault("log_history", []).append((log_dt, log_tau))
        host["n_warmup"] = w + 1
        if host["n_warmup"] == warmup_steps:
            hist = host.get("log_history", [])
            if hist:
                tail = np.asarray(hist[len(hist) // 2:])
                dt = float(np.exp(tail[:, 0].mean()))
                host["timestep_fs"] = dt
                host["trajectory_steps"] = int(min(max(round(float(np.exp(tail[:, 1].mean())) / dt), 1), max_traj))
            state = state._replace(n_accepted=jnp.zeros_like(state.n_accepted), n_steps=jnp.zeros_like(state.n_steps))
        save(state)
        if bar is not None:
            bar.update(1)

    # ---- production: fixed dt and L
    dt, n_traj = host["timestep_fs"], host["trajectory_steps"]
    while len(records) < n_steps:
        i = len(records)
        rec = np.zeros((), rec_dtype)
        if is_cell_step(i):
            state, info = cell_move(state)
            rec["move"] = 1
        else:
            state, info, ml_err = hmc_move(state, dt, n_traj)
            rec["ml_energy_error"] = ml_err
        rec["positions"] = np.asarray(state.positions)
        rec["cells"] = np.asarray(state.cell)
        rec["energies"] = np.asarray(state.target_energy)
        rec["accepted"] = np.asarray(info.accepted)
        rec["probability"] = np.asarray(info.probability)
        rec["timestep_fs"], rec["trajectory_steps"] = dt, n_traj
        records.append(rec)
        if ckpt is not None:
            ckpt.append(rec)
            host["n_recorded"] = len(records)
        save(state)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return _result(atoms, records[:n_steps], host, phash, n_chains, warmup_steps, ensemble)


def _result(atoms, records, host, phash, n_chains, warmup_steps, ensemble) -> SampleResult:
    from ase.calculators.singlepoint import SinglePointCalculator

    from slhmc_jax.diagnostics import mcmc_diagnostics

    rec = np.stack(records)
    pos = np.ascontiguousarray(rec["positions"].transpose(1, 0, 2, 3))
    cells = np.ascontiguousarray(rec["cells"].transpose(1, 0, 2, 3))
    energies = np.ascontiguousarray(rec["energies"].T)
    accepted = np.ascontiguousarray(rec["accepted"].T)
    move = rec["move"].astype(np.int64)
    n_steps = energies.shape[1]
    observables = {"target_energy_eV": energies}
    if ensemble != "nvt":
        observables["volume_A3"] = np.abs(np.linalg.det(cells))
    mcmc = mcmc_diagnostics(
        observables,
        accepted,
        n_target_calls=n_chains * (1 + warmup_steps + n_steps),
        ml_energy_error=rec["ml_energy_error"].T[:, move == 0],
    )
    diag = {"acceptance": mcmc.acceptance, "acceptance_per_chain": mcmc.acceptance_per_chain, "mcmc": mcmc}
    first = mcmc.observables["target_energy_eV"]
    if first is not None:
        diag.update(ess=first.ess, iat=first.iat, rhat=first.rhat)
    diag["timestep_fs"] = float(host["timestep_fs"])
    diag["trajectory_steps"] = int(host["trajectory_steps"])
    diag["ml_energy_error_eV"] = np.ascontiguousarray(rec["ml_energy_error"].T)
    diag["acceptance_probability"] = np.ascontiguousarray(rec["probability"].T)
    diag["move"] = move
    diag["production_timestep_fs"] = rec["timestep_fs"].copy()
    diag["production_trajectory_steps"] = rec["trajectory_steps"].copy()
    diag["warmup"] = [dict(zip(("timestep_fs", "trajectory_steps", "acceptance", "ml_acceptance"), h))
                      for h in host["tuning_history"]]
    diag["neighbour_reallocations"] = int(host["n_reallocations"])
    diag["edge_slots"] = host.get("edge_slots")
    diag["edge_slot_regrowths"] = int(host.get("n_slot_regrowths", 0))
    samples = []
    for c in range(n_chains):
        chain = []
        for a, e in zip(_atoms_list(atoms, pos[c], cells[c]), energies[c]):
            a.calc = SinglePointCalculator(a, energy=float(e))
            chain.append(a)
        samples.append(chain)
    return SampleResult(pos, cells, energies, accepted.mean(1), samples, diag, phash)
