"""``slhmc_jax.sample``: many SLHMC chains, the ML trajectory compiled, the target the only judge.

One Metropolis step for all chains:

1. propose: one compiled call (:func:`slhmc_jax.sampler.kernels.hmc_kernel`) draws momenta and runs the ML
   trajectories of every chain; if a neighbour list overflowed, the layout grows
   (``neighbours.reallocate_for``) and the same trajectories are re-run (same keys): an
   overflowed trajectory is never used;
2. judge: the host sends the proposed configurations to the target in one batched query
   (:class:`slhmc_jax.targets.judge.Judge`: label store, retries, failure policy); a divergent trajectory
   (non-finite, or an ML energy error above ``hmc.DIVERGENCE_KT`` kT) is rejected without a target
   call, and does not grow the neighbour layout. With a ``screen`` (delayed acceptance, see
   :mod:`slhmc_jax.sampler.kernels`), the screen judges every non-divergent proposal first (one batched cheap
   query, stage one) and only those that pass go to the target;
3. accept: one compiled call applies the Metropolis test of every chain (float64; with a screen,
   the second stage);
4. record: warm-up tuning (:mod:`slhmc_jax.sampler.adaptation`), the production record, the checkpoint
   (:mod:`slhmc_jax.sampler.checkpoint`).

NPT alternates (step by step) such a move with a cell move (:func:`slhmc_jax.sampler.kernels.cell_kernel`).

A run has three phases: warm-up (``warmup_steps``, dt and L tuned, nothing recorded), burn-in
(``burn_in_steps``, fixed dt and L, nothing recorded) and production (``n_steps``, recorded).

By name: :func:`sample` loops ``Driver.step`` = ``Driver.propose`` (``kernels.HMCKernel.propose``)
-> ``Driver.screen_stage`` / ``Driver.judge_stage`` (``targets.judge.Judge``) -> ``kernel.accept``
-> :func:`slhmc_jax.sampler.result.production_record`, then ``Driver.save``
(:mod:`~slhmc_jax.sampler.checkpoint`) and :func:`slhmc_jax.sampler.result.assemble`. Settings:
:mod:`~slhmc_jax.sampler.settings`; counters: :mod:`~slhmc_jax.sampler.counters`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import neighbours as nb
from slhmc_jax.calculator import check_species
from slhmc_jax.sampler import adaptation as adapt
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax.sampler.checkpoint import CHECKPOINT_VERSION, Checkpoint, DriverState, check_resumable
from slhmc_jax.sampler.counters import SamplerCounters
from slhmc_jax.sampler.result import SampleResult, assemble, production_record, record_dtype
from slhmc_jax.sampler.settings import SamplerSettings
from slhmc_jax.targets.judge import Judge, Judgement

MAX_REALLOCATIONS = 10
# a warning is given when more than this fraction of a chain's trajectories diverged
DIVERGENT_WARNING_FRACTION = 0.01


def proposal_hash(params) -> str:
    """sha256 over the parameter pytree leaves' bytes, shapes and dtypes."""
    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(params):
        a = np.asarray(leaf)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


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


# ----------------------------------------------------------------------------------------
# the driver


class Move(NamedTuple):
    """One step's proposal for all chains, as the judge and the accept step need it.

    Attributes:
        kernel: the :class:`~slhmc_jax.sampler.kernels.HMCKernel` or ``CellKernel`` that proposed it.
        proposal: the kernel's proposal (``hmc.Proposal`` or ``hmc.CellProposal``).
        positions: (n_chains, n_atoms, 3) Angstrom. cells: (n_chains, 3, 3) Angstrom.
        judged: (n_chains,) bool, the chains whose proposal goes to the judges (not divergent).
        ml_energy_error: (n_chains,) eV (0 for a cell move, NaN where not judged).
    """

    kernel: Any
    proposal: Any
    positions: np.ndarray
    cells: np.ndarray
    judged: np.ndarray
    ml_energy_error: np.ndarray


class Driver:
    """The imperative shell around the kernels: inputs checked once, kernels, judges, checkpoint.

    ``start`` gives the state to continue from, ``step`` runs propose -> judge -> accept -> record
    on it, ``save`` checkpoints, ``result`` assembles the SampleResult (:func:`sample` is the loop).
    """

    def __init__(self, atoms, proposal, target, settings: SamplerSettings, store, labels, checkpoint, neighbour_layout,
                 screen=None):
        self.settings = settings
        self.starts = _start_structures(atoms, settings.n_chains)
        self.template = self.starts[0]
        self.proposal = _load_proposal(proposal)
        check_species(self.proposal, self.template.numbers)
        self.params = self.proposal.params
        self.phash = proposal_hash(self.params)
        self.numbers = np.asarray(self.template.numbers)
        self.masses = np.asarray(self.template.get_masses())
        self.pbc = np.asarray(self.template.pbc, bool)
        if settings.ensemble != "nvt" and not self.pbc.all():
            raise ValueError(f"ensemble={settings.ensemble!r} needs a fully periodic structure; pbc is {self.pbc.tolist()}")
        self.judge, self.screen = make_judges(target, screen, store, labels, checkpoint, settings, self.template)
        self.screen_settings = None if screen is None else self.screen.cached.settings()
        self.record_dtype = record_dtype(settings.n_chains, len(self.template))
        self.checkpoint = None if checkpoint is None else Checkpoint(checkpoint, self.record_dtype)
        self.neighbour_layout = neighbour_layout
        self.adaptation = adapt.timestep_and_length(settings.target_acceptance, settings.max_trajectory,
                                                    10.0 * settings.timestep_fs)
        self.cell_moves = None
        if settings.ensemble != "nvt":
            mode = "orthorhombic" if settings.ensemble == "npt_orthorhombic" else "isotropic"
            self.cell_moves = hmc.cell_kernel(settings.temperature_K, settings.pressure_GPa, settings.max_log_cell_step, mode)
        self._hmc_kernels: dict = {}  # neighbour layout -> compiled HMC kernel

    # ---- start / resume

    def start(self) -> tuple[DriverState, list]:
        """The state to continue from (the checkpoint's, or fresh chains at the start structures)
        and the production records so far."""
        if self.checkpoint is not None and self.checkpoint.exists():
            state, records = self.checkpoint.load()
            check_resumable(state, self.settings, self.phash, self.screen_settings, self.checkpoint.path)
            state = state.replace(chains=hmc.ChainState(*(jnp.asarray(a) for a in state.chains)), settings=self.settings)
        else:
            state, records = self._fresh_state(), []
        return state.replace(chains=shard_chains(state.chains, self.settings.n_chains)), records

    def _fresh_state(self) -> DriverState:
        s = self.settings
        verdict = judge_start_structures(self.judge, self.starts, "target")
        counters = SamplerCounters.zero(s.n_chains).judged_by_target(verdict, len(set(verdict.keys.tolist())))
        screen_energies = None
        if self.screen is not None:
            cheap = judge_start_structures(self.screen, self.starts, "screen")
            counters, screen_energies = counters.judged_by_screen(cheap), cheap.energies_eV
        x0 = np.stack([a.positions for a in self.starts])
        c0 = np.stack([a.cell.array for a in self.starts])
        layout = self.neighbour_layout
        if layout is None:
            layout = initial_layout(self.proposal, x0, c0, self.pbc, s.skin_A)
        return DriverState(
            version=CHECKPOINT_VERSION, settings=s, proposal_hash=self.phash,
            chains=hmc.init(x0, c0, verdict.energies_eV, s.seed, screen_energies),
            adaptation=self.adaptation.init(s.timestep_fs, s.trajectory_steps), timestep_fs=s.timestep_fs,
            trajectory_steps=s.trajectory_steps, layout=layout, n_warmup=0, n_burn_in=0,
            n_recorded=0, keys=verdict.keys, counters=counters, screen_settings=self.screen_settings)

    # ---- the phases of the run

    def dt_and_length(self, state: DriverState) -> tuple[float, int]:
        """(dt fs, L) of the next HMC move: the tuner's during warm-up, then the fixed production values."""
        if state.phase()[0] == "warmup":
            return self.adaptation.parameters(state.adaptation)
        return state.timestep_fs, state.trajectory_steps

    # ---- propose

    def _hmc_kernel(self, layout):
        if layout not in self._hmc_kernels:
            self._hmc_kernels[layout] = hmc.hmc_kernel(self.proposal, self.numbers, self.masses,
                                                       self.settings.temperature_K, layout=layout,
                                                       timestep_jitter=self.settings.timestep_jitter)
        return self._hmc_kernels[layout]

    def propose(self, state: DriverState, cell_move: bool) -> tuple[DriverState, Move]:
        """This step's move of all chains (a cell move, or ML trajectories counted for divergence)."""
        n = self.settings.n_chains
        if cell_move:
            prop = self.cell_moves.propose(state.chains)
            return state, Move(self.cell_moves, prop, np.asarray(prop.positions), np.asarray(prop.cell),
                               np.ones(n, bool), np.zeros(n))
        state, prop, judged = self.propose_hmc(state)
        state = state.replace(counters=state.counters.add(divergent=np.asarray(prop.divergent)))
        return state, Move(self._hmc_kernel(state.layout), prop, np.asarray(prop.positions),
                           np.asarray(state.chains.cell), judged,
                           np.where(judged, np.asarray(prop.ml_energy_error), np.nan))

    def propose_hmc(self, state: DriverState) -> tuple[DriverState, hmc.Proposal, np.ndarray]:
        """The ML trajectories of all chains, re-run with a grown layout until none overflowed.

        A divergent trajectory never grows the layout (its neighbour demand is the blow-up's, and
        it is rejected anyway; when its list also overflowed, the divergence is judged on the
        overflowed list).

        Returns (state, proposal, judged): ``judged`` (n_chains,) bool marks the chains whose
        proposal goes to the target (not divergent, no overflow).
        """
        dt, n_traj = self.dt_and_length(state)
        for _ in range(MAX_REALLOCATIONS + 1):
            prop = self._hmc_kernel(state.layout).propose(state.chains, self.params, dt, n_traj)
            overflow, divergent = np.asarray(prop.overflow), np.asarray(prop.divergent)
            grow = overflow & ~divergent
            if not grow.any():
                return state, prop, ~(overflow | divergent)
            layout = nb.reallocate_for(state.layout, np.asarray(state.chains.positions), np.asarray(state.chains.cell),
                                       int(np.max(np.asarray(prop.max_pairs)[grow])),
                                       int(np.max(np.asarray(prop.max_per_atom)[grow])),
                                       capacity_factor=1.25, batch=True)
            state = state.replace(layout=layout, counters=state.counters.add(neighbour_reallocations=1))
        raise RuntimeError(f"neighbour list still overflows after {MAX_REALLOCATIONS} reallocations: {state.layout}")

    # ---- judge

    def screen_stage(self, state: DriverState, move: Move):
        """Delayed acceptance, stage one on the screen's energies (+inf where not judged or failed).

        Returns (state, screening, passed): ``passed`` (n_chains,) bool, the proposals for the target.
        """
        idx = np.flatnonzero(move.judged)
        energies = np.full(self.settings.n_chains, np.inf)
        counters = state.counters
        if idx.size:
            verdict = self.screen(configurations(self.template, move, idx), idx.tolist())
            energies[idx] = verdict.energies_eV
            counters = counters.judged_by_screen(verdict)
        screening = move.kernel.screen(state.chains, move.proposal, energies)
        passed = np.asarray(screening.passed)
        counters = counters.add(screen_rejected=int(np.sum(move.judged & ~passed)), stage_two=int(np.sum(passed)))
        return state.replace(counters=counters), screening, passed

    def judge_stage(self, state: DriverState, move: Move, judged: np.ndarray):
        """Target energies (eV; +inf where not judged or failed) and store keys of the proposals.

        Returns (state, energies (n_chains,), keys (n_chains,) object: the current state's key
        where not judged).
        """
        idx = np.flatnonzero(judged)
        energies = np.full(self.settings.n_chains, np.inf)
        keys = np.array(state.keys, dtype=object)
        if idx.size:
            verdict = self.judge(configurations(self.template, move, idx), idx.tolist())
            energies[idx] = verdict.energies_eV
            keys[idx] = verdict.keys
            state = state.replace(counters=state.counters.judged_by_target(verdict, len(set(verdict.keys.tolist()))))
        return state, energies, keys

    # ---- one step

    def step(self, state: DriverState) -> tuple[DriverState, np.ndarray | None]:
        """propose -> judge -> accept -> record; the record (production) or None."""
        cell_move = state.is_cell_move
        dt, n_traj = self.dt_and_length(state)
        state, move = self.propose(state, cell_move)
        screening, judged = None, move.judged
        if self.screen is not None:
            state, screening, judged = self.screen_stage(state, move)
        state, energies, keys = self.judge_stage(state, move, judged)
        chains, info = move.kernel.accept(state.chains, move.proposal, energies, screening)
        accepted = np.asarray(info.accepted)
        counters = state.counters if screening is None else state.counters.add(stage_two_accepted=int(accepted.sum()))
        state = state.replace(chains=chains, keys=np.where(accepted, keys, state.keys).astype(str), counters=counters)
        phase, _ = state.phase()
        if phase == "warmup":
            return end_warmup_step(self.adaptation, state, cell_move, info, move.ml_energy_error), None
        if phase == "burn_in":
            return state.replace(n_burn_in=state.n_burn_in + 1), None
        rec = production_record(self.record_dtype, chains, info, move.ml_energy_error, state.keys, cell_move, dt, n_traj)
        return state.replace(n_recorded=state.n_recorded + 1), rec

    # ---- persistence and the result

    def save(self, state: DriverState, record: np.ndarray | None) -> None:
        """Checkpoint: the production record first (appended), then the state that counts it."""
        if self.checkpoint is None:
            return
        if record is not None:
            self.checkpoint.append(record)
        self.checkpoint.save(state.replace(chains=hmc.ChainState(*(np.asarray(a) for a in state.chains))))

    def result(self, state: DriverState, records: list) -> SampleResult:
        warn_if_divergent(self.settings, state.counters)
        return assemble(records, settings=self.settings, counters=state.counters, timestep_fs=state.timestep_fs,
                        trajectory_steps=state.trajectory_steps, warmup=state.adaptation.history,
                        max_neighbours=None if state.layout is None else state.layout.max_neighbours,
                        atomic_numbers=self.numbers, pbc=self.pbc, proposal_hash=self.phash,
                        screened=self.screen is not None)


def warn_if_divergent(settings: SamplerSettings, counters: SamplerCounters) -> None:
    """RuntimeWarning when more than DIVERGENT_WARNING_FRACTION of a chain's ML trajectories diverged."""
    n_trajectories = math.ceil(settings.total_steps / (2 if settings.ensemble != "nvt" else 1))
    divergent = counters.divergent
    if np.any(divergent / max(1, n_trajectories) > DIVERGENT_WARNING_FRACTION):
        # stacklevel 4: here, Driver.result, sample, the caller of sample
        warnings.warn(f"{int(divergent.sum())} ML trajectories diverged (per chain {divergent.tolist()}; "
                      f"non-finite or an energy error above {hmc.DIVERGENCE_KT:g} kT): the proposal model is NaN or "
                      f"wild somewhere, or dt is too large; those proposals were rejected without a target call, "
                      f"which is exact but wasteful", RuntimeWarning, stacklevel=4)


def judge_start_structures(judge: Judge, starts: list, role: str) -> Judgement:
    """The judgement of the chains' start structures (ValueError naming the chains ``role``, the
    target or the screen, could not evaluate)."""
    verdict = judge([a.copy() for a in starts], list(range(len(starts))))
    if verdict.failed.any():
        raise ValueError(f"the {role} could not evaluate the start structure of chain(s) "
                         f"{np.flatnonzero(verdict.failed).tolist()}")
    return verdict


def end_warmup_step(tuner: adapt.Adaptation, state: DriverState, cell_move: bool, info: hmc.AcceptInfo,
                    ml_error: np.ndarray) -> DriverState:
    """``state`` after a warm-up step: the tuner updated on an HMC move's acceptance; at the last
    warm-up step the production dt and L fixed and the chains' acceptance counts restarted."""
    adaptation = state.adaptation
    if not cell_move:
        # the Metropolis probability of the move: with a screen 1[stage one] a2, whose mean
        # estimates the two-stage acceptance without a target call for the stage-one rejections
        a = float(np.mean(np.asarray(info.probability)))
        a_ml = float(np.mean(np.asarray(hmc.acceptance_probability(ml_error, state.settings.temperature_K))))
        adaptation = tuner.update(adaptation, a, a_ml)
    state = state.replace(adaptation=adaptation, n_warmup=state.n_warmup + 1)
    if state.n_warmup == state.settings.warmup_steps:
        dt, n_traj = tuner.final(adaptation)
        zeros = jnp.zeros_like(state.chains.n_steps)
        state = state.replace(timestep_fs=dt, trajectory_steps=n_traj,
                              chains=state.chains._replace(n_accepted=zeros, n_steps=zeros))
    return state


def configurations(template, move: Move, chains: np.ndarray) -> list:
    """The proposed configurations of ``chains`` as copies of ``template`` (ase.Atoms, no calculator)."""
    out = []
    for i in chains:
        a = template.copy()
        a.calc = None
        a.positions = np.asarray(move.positions[i], np.float64)
        a.cell = np.asarray(move.cells[i], np.float64)
        out.append(a)
    return out


def initial_layout(proposal, x0: np.ndarray, c0: np.ndarray, pbc: np.ndarray, skin_A: float):
    """The neighbour layout of the start structures x0 (n_chains, N, 3) A, c0 (n_chains, 3, 3) A
    (dense per-atom slots for a model that prefers them), or None for a proposal without a cutoff."""
    if proposal.cutoff is None:
        return None
    dense = "auto" if getattr(proposal, "prefers_dense_neighbours", False) else None
    layout, _ = nb.allocate(x0, c0, tuple(pbc.tolist()), float(proposal.cutoff), skin_A, batch=True,
                            max_neighbours=dense)
    return layout


def make_judges(target, screen, store, labels: str, checkpoint, settings: SamplerSettings, template
                ) -> tuple[Judge, Judge | None]:
    """(judge of the target, judge of the screen or None).

    The target's results go to ``store`` (default with a checkpoint: ``checkpoint +
    ".labels.sqlite"``, so that a resumed run repeats no target call; False: none). The screen's
    energies are not stored: a label store is a training set of TARGET labels (export_extxyz
    writes every row), and a cheap screen is re-run after a kill for less than it costs to keep.
    """
    if checkpoint is not None and store is None:
        store = os.fspath(checkpoint) + ".labels.sqlite"
    if store is False:  # asked for no store (a cheap judge, e.g. a model judging itself)
        store = None
    judge = Judge(target, store, labels=labels, max_retries=settings.max_retries, on_failure=settings.on_failure)
    if screen is None:
        return judge, None
    return judge, Judge(check_screen(screen, target, judge.target, template), None, max_retries=settings.max_retries,
                        on_failure=settings.on_failure)


def check_screen(screen, target, target_as_target, template):
    """The delayed-acceptance screen as a Target, checked against the system and the target.

    ValueError: the screen is the target object itself (stage one would cost what it saves), its
    declared species do not cover the system, or its declared periodicity excludes the system or
    differs from the target's (``targets.base.declared_periodic``). A warning: a distinct screen
    object with the target's settings (the same method computed twice; plain functions excepted,
    whose settings are only their names).
    """
    from slhmc_jax.targets.base import check_evaluable, declared_periodic
    from slhmc_jax.targets.stack import as_target

    if screen is target or screen is target_as_target:
        raise ValueError("screen is the target itself: delayed acceptance needs a cheaper energy than the target "
                         "(every proposal would be evaluated twice at the target's cost)")
    try:
        screened = as_target(screen)
    except TypeError as err:
        raise ValueError(f"screen: {err}") from None
    check_evaluable(screened, template, role="screen")
    p_screen, p_target = declared_periodic(screened), declared_periodic(target_as_target)
    if p_screen is not None and p_target is not None and p_screen != p_target:
        raise ValueError(f"the screen is {'periodic' if p_screen else 'molecular'} but the target is "
                         f"{'periodic' if p_target else 'molecular'}: they must evaluate the same kind of system")
    settings = screened.settings()
    if settings == target_as_target.settings() and settings.get("method") != "callable":
        warnings.warn(f"the screen has the same settings as the target ({settings}): if it computes the same "
                      f"energy, delayed acceptance only adds cost", RuntimeWarning, stacklevel=4)
    return screened


def _start_structures(atoms, n_chains: int) -> list:
    """One ase.Atoms per chain: ``atoms`` repeated, or a list of n_chains structures of one composition."""
    if isinstance(atoms, (list, tuple)):
        starts = [a.copy() for a in atoms]
        if len(starts) != n_chains:
            raise ValueError(f"{len(starts)} start structures for n_chains={n_chains}")
        first = starts[0]
        for i, a in enumerate(starts):
            if list(a.numbers) != list(first.numbers) or list(a.pbc) != list(first.pbc):
                raise ValueError(f"start structure {i} has other atoms or periodicity than structure 0")
    else:
        starts = [atoms.copy() for _ in range(n_chains)]
    if len(starts[0]) == 0:
        raise ValueError("the structure has no atoms")
    for a in starts:
        nb.validate_geometry(a.positions, a.cell.array, a.pbc)
    return starts


def _load_proposal(proposal):
    """A Potential, or the path of a model file (mace-torch ``.model`` or the project's own)."""
    if isinstance(proposal, (str, os.PathLike)):
        from slhmc_jax.models import load

        return load(proposal)
    if not hasattr(proposal, "energy") or not hasattr(proposal, "cutoff"):
        raise ValueError(f"proposal must be a slhmc_jax Potential or a model file path; got {type(proposal).__name__}")
    return proposal


# ----------------------------------------------------------------------------------------
# the public entry point


def sample(atoms, proposal, target, *, settings: SamplerSettings | None = None, store=None, labels: str = "energy",
           checkpoint=None, progress: bool = True, neighbour_layout=None, screen=None, **setting_values) -> SampleResult:
    """Run ``n_chains`` SLHMC chains for ``n_steps`` recorded Metropolis steps each.

    Each step: one compiled call proposes for all chains (Maxwell-Boltzmann momenta, velocity
    Verlet on ``proposal`` for L steps of dt); the host sends the batch of proposed configurations
    to ``target`` in one query; every chain accepts with min(1, exp(-beta [E_t' + K' - E_t - K]))
    in float64. The chains sample exp(-E_target/kT) whatever the proposal is. The proposal
    parameters are frozen; their hash is recorded. NPT alternates HMC moves with cell moves
    accepted with min(1, (V'/V)^(N+1) exp(-beta [E_t' + P V' - E_t - P V])) (``hmc.propose_cell``).

    Args:
        atoms: ase.Atoms, the start of every chain, or a list of n_chains start structures of one
            composition.
        proposal: a :class:`slhmc_jax.models.Potential`, or the path of a model file.
        target: a :class:`slhmc_jax.targets.Target`, any ASE calculator, or a callable
            (list of ase.Atoms) -> energies (eV).
        settings: a :class:`SamplerSettings`; or give its fields as keywords
            (temperature_K, n_chains, n_steps, trajectory_steps, timestep_fs, seed, ensemble,
            pressure_GPa, warmup_steps, burn_in_steps, ...).
        store: a :class:`slhmc_jax.targets.store.LabelStore` or its path: every target result is committed
            there before it is used, and a configuration already there is not evaluated again.
            Default: none, or ``checkpoint + ".labels.sqlite"`` when checkpointing; False: none.
        labels: "energy", or "forces" to have the target compute forces at every proposal (a
            full training label per stored row). Measured here (PySCF PBE/STO-3G H2O, grid level
            0, warm-started, one thread): 0.048 s of CPU per energy, 0.069 s with forces (1.4x);
            analytic gradients cost relatively more for larger systems and periodic cells. The
            cheaper alternative is :func:`slhmc_jax.targets.store.label_forces` afterwards, for the states
            that will be trained on (the accepted ones), which fills their store rows.
        checkpoint: path of the state file (records in ``path + ".records"``); written after every
            step; a run started with an existing checkpoint resumes from it (bit-identical to an
            uninterrupted run with the same seed) and may extend ``n_steps``.
        progress: show a progress bar.
        neighbour_layout: a ``neighbours.NeighbourLayout`` to start from (default: allocated from
            the start structures with ``skin_A``, in the dense per-atom format for models that
            prefer it); it grows on overflow like the default one.
        screen: a cheap energy for delayed acceptance (Christen & Fox 2005; derivation in
            :mod:`slhmc_jax.sampler.kernels`), anything ``target`` may be (a Target, an ASE calculator, a
            callable): stage one accepts with min(1, exp(-beta [E_c' + K' - E_c - K])) (cell
            moves: min(1, J exp(-beta [E_c' + P V' - E_c - P V]))) and only the proposals that pass
            go to ``target``, which accepts them with min(1, exp(-beta [(E_t' - E_t) - (E_c' - E_c)])).
            The chains still sample exp(-E_target/kT) exactly, whatever the screen; a screen close
            to the target saves the target evaluations of the moves it rejects. Each step costs one
            screen call per non-divergent proposal (the current states' screen energies are kept in
            the chain state and the checkpoint; the start structures cost one call each). Its
            results are not put in the label store (that holds target labels only). Failures
            follow ``on_failure`` like the target's ("reject": stage one rejects the proposal).
            Counters and timings: :class:`SamplerDiagnostics` (``n_screen_rejected``,
            ``target_calls_saved_fraction``, ``stage_two_acceptance``, ``target_cpu_s``, ...).

    Warm-up and burn-in: see :mod:`slhmc_jax.sampler.adaptation` and :class:`SamplerSettings`.

    Raises:
        ValueError: bad settings or inputs (before anything is compiled), a start structure
            the target (or the screen) cannot evaluate, or a screen that is the target itself or
            declares species or periodicity that do not fit the system or the target.
    """
    if settings is None:
        try:
            settings = SamplerSettings(**setting_values)
        except TypeError as err:
            raise ValueError(f"bad sampler settings: {err}") from None
    elif setting_values:
        raise ValueError(f"give settings= or the setting keywords, not both (got {sorted(setting_values)})")
    driver = Driver(atoms, proposal, target, settings, store, labels, checkpoint, neighbour_layout, screen)
    state, records = driver.start()
    from tqdm.auto import tqdm

    with tqdm(total=settings.total_steps, initial=state.steps_done, disable=not progress, desc="SLHMC") as bar:
        while len(records) < settings.n_steps:
            state, record = driver.step(state)
            if record is not None:
                records.append(record)
            driver.save(state, record)
            bar.update(1)
    return driver.result(state, records)
