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
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax.sampler import adaptation as adapt
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax import neighbours as nb
from slhmc_jax.calculator import check_species
from slhmc_jax.sampler.checkpoint import Checkpoint
from slhmc_jax.targets.judge import FAILURE_POLICIES, Judge

ENSEMBLES = ("nvt", "npt", "npt_orthorhombic")
_CHECKPOINT_VERSION = 4  # 4: ChainState.screen_energy and the delayed-acceptance counters
_MAX_REALLOCATIONS = 10
# a warning is given when more than this fraction of a chain's trajectories diverged
DIVERGENT_WARNING_FRACTION = 0.01


# ----------------------------------------------------------------------------------------
# settings


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """Everything that defines an SLHMC run (validated on construction; a checkpoint compares it).

    Attributes:
        temperature_K: K (> 0).
        n_chains: chains run side by side (>= 1).
        n_steps: recorded production Metropolis steps per chain (>= 1).
        trajectory_steps: velocity-Verlet steps L of each ML trajectory (>= 1; the start value
            when warm-up tunes it).
        timestep_fs: velocity-Verlet step dt, fs (> 0; the start value when warm-up tunes it).
        seed: integer seed of every random draw.
        timestep_jitter: j in [0, 1): each chain's every trajectory runs at dt (1 + j u), u ~ U(-1, 1)
            drawn from the chain's key (independent of its state, so the chain stays exact). A fixed
            trajectory length L dt resonates with the vibrations of a stiff, near-harmonic system:
            measured on the TiO2 quickstart molecule (fine-tuned proposal, dt 1.54 fs, no jitter),
            the Ti-O distance's IAT is 0.3, 1.5, 11.4 and 9.2 steps at L = 32, 49, 24 and 64; with
            j = 0.5 it is 1.0 at L = 24 and 49 (j = 0.2: 5.1 and 1.2). Jitter averages over the
            phases (Mackenzie, Phys. Lett. B 226, 369 (1989)); 0 turns it off.
        ensemble: "nvt", "npt" (isotropic cell moves) or "npt_orthorhombic" (a, b, c independently).
        pressure_GPa: GPa, required for NPT.
        warmup_steps: steps that tune dt and L (not recorded; >= 0).
        burn_in_steps: steps at the final dt and L that are not recorded; None: 0 after a
            warm-up, else 10% of ``n_steps`` (at least 1), so the start structure is not kept.
        target_acceptance: the acceptance warm-up aims at, in (0, 1).
        max_trajectory_steps: upper bound of the tuned L (default 4 x trajectory_steps).
        max_log_cell_step: largest change of ln V (or each ln length) of a cell move (> 0).
        skin_A: Verlet skin of the proposal's neighbour list, A (>= 0).
        on_failure: "raise" or "reject" (:mod:`slhmc_jax.targets.judge`).
        max_retries: retries of a failed target evaluation (>= 0).
    """

    temperature_K: float
    n_chains: int
    n_steps: int
    trajectory_steps: int
    timestep_fs: float
    seed: int
    ensemble: str = "nvt"
    pressure_GPa: float | None = None
    warmup_steps: int = 0
    burn_in_steps: int | None = None
    target_acceptance: float = 0.65
    max_trajectory_steps: int | None = None
    max_log_cell_step: float = 0.05
    skin_A: float = 0.5
    on_failure: str = "raise"
    max_retries: int = 2
    timestep_jitter: float = 0.5

    # fields a resumed run may change: the run length and how failures are handled
    RESUMABLE_CHANGES = ("n_steps", "on_failure", "max_retries")

    def __post_init__(self):
        def positive_int(name, allow_zero=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if allow_zero else 1):
                raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer; got {v!r}")
            object.__setattr__(self, name, int(v))

        def positive_float(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not np.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number; got {v!r}")
            object.__setattr__(self, name, float(v))

        positive_float("temperature_K")
        for name in ("n_chains", "n_steps", "trajectory_steps"):
            positive_int(name)
        positive_float("timestep_fs")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer; got {self.seed!r}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {ENSEMBLES} ('npt' is isotropic); got {self.ensemble!r}")
        if self.ensemble != "nvt":
            if self.pressure_GPa is None:
                raise ValueError(f"pressure_GPa is required for ensemble={self.ensemble!r}")
            if not np.isfinite(self.pressure_GPa):
                raise ValueError(f"pressure_GPa must be a finite number; got {self.pressure_GPa!r}")
            object.__setattr__(self, "pressure_GPa", float(self.pressure_GPa))
        elif self.pressure_GPa is not None:
            raise ValueError("pressure_GPa is given but ensemble='nvt' (choose 'npt' or 'npt_orthorhombic')")
        positive_int("warmup_steps", allow_zero=True)
        if self.burn_in_steps is not None:
            positive_int("burn_in_steps", allow_zero=True)
        if not 0 < self.target_acceptance < 1:
            raise ValueError(f"target_acceptance must be in (0, 1); got {self.target_acceptance!r}")
        if self.max_trajectory_steps is not None:
            positive_int("max_trajectory_steps")
        positive_float("max_log_cell_step")
        if not (np.isfinite(self.skin_A) and self.skin_A >= 0):
            raise ValueError(f"skin_A must be a finite non-negative distance in A; got {self.skin_A!r}")
        object.__setattr__(self, "skin_A", float(self.skin_A))
        if self.on_failure not in FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {FAILURE_POLICIES}; got {self.on_failure!r}")
        positive_int("max_retries", allow_zero=True)
        j = self.timestep_jitter
        if isinstance(j, bool) or not isinstance(j, (int, float, np.floating, np.integer)) or not 0 <= j < 1:
            raise ValueError(f"timestep_jitter must be a number in [0, 1); got {j!r}")
        object.__setattr__(self, "timestep_jitter", float(j))

    @property
    def n_burn_in(self) -> int:
        """Unrecorded steps at fixed dt and L after the warm-up (see ``burn_in_steps``)."""
        if self.burn_in_steps is not None:
            return self.burn_in_steps
        return 0 if self.warmup_steps else max(1, round(0.1 * self.n_steps))

    @property
    def max_trajectory(self) -> int:
        return self.max_trajectory_steps or 4 * self.trajectory_steps

    def differences(self, other: "SamplerSettings") -> dict:
        """{field: (self, other)} of the chain-defining fields that differ (resumable ones excluded)."""
        out = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name not in self.RESUMABLE_CHANGES and a != b:
                out[f.name] = (a, b)
        return out


# ----------------------------------------------------------------------------------------
# results


@dataclasses.dataclass(frozen=True)
class SamplerDiagnostics:
    """What a run measured about itself.

    Attributes:
        mcmc: acceptance, ESS, IAT and R-hat (:class:`slhmc_jax.analysis.diagnostics.MCMCDiagnostics`) of the
            production samples: target energy (eV), and for NPT volume (A^3) and cell lengths a, b, c (A).
        timestep_fs, trajectory_steps: the production dt (fs) and L.
        ml_energy_error_eV: (n_chains, n_steps) ML-trajectory energy error (0 on cell moves,
            NaN for a divergent trajectory).
        acceptance_probability: (n_chains, n_steps) Metropolis probabilities.
        move: (n_steps,) 0 = HMC move, 1 = cell move.
        production_timestep_fs, production_trajectory_steps: (n_steps,) what each step used.
        warmup: the tuning steps (:class:`slhmc_jax.sampler.adaptation.WarmupStep`).
        warmup_steps, burn_in_steps: unrecorded steps before production (tuning / fixed).
        neighbour_reallocations: layout growths after an overflow.
        max_neighbours: slots per atom of the dense neighbour format (None: pair format).
        n_judged: configurations judged (target or store), the cost of the run without a store.
        n_target_calls: configurations the target evaluated (this process and earlier segments).
        n_from_store: configurations answered from the label store (this process).
        n_failed: evaluations given up on (``on_failure="reject"``).
        divergent_trajectories: (n_chains,) divergent ML trajectories (rejected without a target
            call), warm-up and burn-in included.
        target_wall_s, target_cpu_s: seconds the target's batches took as the Judge sees them
            (start structures, warm-up, burn-in and production; earlier segments of a resumed run
            included): wall clock (``time.perf_counter``), and this process's CPU time
            (``time.process_time``, all its threads: the cost of an in-process target such as
            PySCFTarget; a dispatched target's worker CPU is not in it, use the wall time there).
        screened: a delayed-acceptance screen was used (the counters below are 0 without one).
        n_screen_calls: configurations the screen evaluated (start structures included).
        n_screen_rejected: proposals rejected by stage one (divergent ones not counted: they reach
            neither stage), i.e. target evaluations saved.
        n_stage_two: proposals that passed stage one and went to the target.
        n_stage_two_accepted: of those, accepted by stage two.
        screen_wall_s, screen_cpu_s: as target_wall_s / target_cpu_s, for the screen.

    With a screen, ``acceptance_probability`` is 1[passed stage one] a2 (an unbiased estimate of
    the two-stage probability a1 a2; what warm-up tunes on) and the counters cover the whole run
    (warm-up and burn-in included).
    """

    mcmc: Any
    timestep_fs: float
    trajectory_steps: int
    ml_energy_error_eV: np.ndarray
    acceptance_probability: np.ndarray
    move: np.ndarray
    production_timestep_fs: np.ndarray
    production_trajectory_steps: np.ndarray
    warmup: tuple
    warmup_steps: int
    burn_in_steps: int
    neighbour_reallocations: int
    max_neighbours: int | None
    n_judged: int
    n_target_calls: int
    n_from_store: int
    n_failed: int
    divergent_trajectories: np.ndarray
    target_wall_s: float = 0.0
    target_cpu_s: float = 0.0
    screened: bool = False
    n_screen_calls: int = 0
    n_screen_rejected: int = 0
    n_stage_two: int = 0
    n_stage_two_accepted: int = 0
    screen_wall_s: float = 0.0
    screen_cpu_s: float = 0.0

    @property
    def acceptance(self) -> float:
        return self.mcmc.acceptance

    @property
    def target_calls_saved_fraction(self) -> float:
        """Fraction of the (non-divergent) proposals that stage one stopped before the target:
        n_screen_rejected / (n_screen_rejected + n_stage_two) (0 without a screen)."""
        n = self.n_screen_rejected + self.n_stage_two
        return self.n_screen_rejected / n if n else 0.0

    @property
    def stage_two_acceptance(self) -> float:
        """Accepted / judged by the target among the proposals that passed stage one (NaN if none)."""
        return self.n_stage_two_accepted / self.n_stage_two if self.n_stage_two else float("nan")


class ChainFrames(Sequence):
    """The recorded states of one chain as ase.Atoms (built on access) with the target energy."""

    def __init__(self, result: "SampleResult", chain: int):
        self._result, self._chain = result, chain

    def __len__(self) -> int:
        return self._result.positions.shape[1]

    def __getitem__(self, step):
        if isinstance(step, slice):
            return [self[i] for i in range(*step.indices(len(self)))]
        return self._result.atoms_at(self._chain, step)


@dataclasses.dataclass(frozen=True)
class SampleResult:
    """The production samples of every chain (warm-up and burn-in steps are not recorded).

    Attributes:
        positions: (n_chains, n_steps, n_atoms, 3) Angstrom.
        cells: (n_chains, n_steps, 3, 3) Angstrom.
        target_energies: (n_chains, n_steps) eV.
        accepted: (n_chains, n_steps) bool, the Metropolis decision of each step (the state moved;
            with a screen: passed both stages).
        acceptance_rate: (n_chains,) over all production moves.
        hmc_acceptance_rate: (n_chains,) over the HMC moves.
        cell_acceptance_rate: (n_chains,) over the cell moves (None for NVT).
        store_keys: (n_chains, n_steps) label-store key of each recorded state (str).
        atomic_numbers: (n_atoms,). pbc: (3,) bool.
        diagnostics: :class:`SamplerDiagnostics`.
        proposal_hash: sha256 of the frozen proposal parameters.
    """

    positions: np.ndarray
    cells: np.ndarray
    target_energies: np.ndarray
    accepted: np.ndarray
    acceptance_rate: np.ndarray
    hmc_acceptance_rate: np.ndarray
    cell_acceptance_rate: np.ndarray | None
    store_keys: np.ndarray
    atomic_numbers: np.ndarray
    pbc: np.ndarray
    diagnostics: SamplerDiagnostics
    proposal_hash: str

    @property
    def samples(self) -> list[ChainFrames]:
        """Per chain, the recorded states as ase.Atoms carrying the target energy (built lazily)."""
        return [ChainFrames(self, c) for c in range(self.positions.shape[0])]

    def structural_statistics(self, pair: tuple[str, str] | None = None):
        """(name, ChainStatistics) of a structural observable: the per-frame mean distance from
        each ``pair[0]`` atom to its nearest ``pair[1]`` atom (A), ESS, IAT and R-hat over chains.

        Default pair: the two most abundant elements (the one element, for an elemental system).
        """
        from ase.data import chemical_symbols

        from slhmc_jax.analysis.diagnostics import chain_statistics
        from slhmc_jax.analysis.observables import nearest_neighbour_distances

        if pair is None:
            z, counts = np.unique(self.atomic_numbers, return_counts=True)
            top = z[np.argsort(-counts, kind="stable")][:2]
            pair = (chemical_symbols[top[0]], chemical_symbols[top[-1]])
        n_chains, n_steps = self.target_energies.shape
        frames = (self.positions.reshape((-1,) + self.positions.shape[2:]), self.cells.reshape(-1, 3, 3),
                  self.atomic_numbers, tuple(bool(p) for p in self.pbc))
        d = nearest_neighbour_distances(frames, pair[0], pair[1], k=1).mean(axis=(1, 2)).reshape(n_chains, n_steps)
        return f"nn_{pair[0]}-{pair[1]}_A", chain_statistics(d, self.diagnostics.n_judged)

    def atoms_at(self, chain: int, step: int):
        """The state of ``chain`` after production step ``step`` as ase.Atoms with its target energy."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        a = ase.Atoms(numbers=self.atomic_numbers, positions=self.positions[chain, step], cell=self.cells[chain, step],
                      pbc=self.pbc)
        a.calc = SinglePointCalculator(a, energy=float(self.target_energies[chain, step]))
        a.info["store_key"] = str(self.store_keys[chain, step])
        return a


# ----------------------------------------------------------------------------------------
# driver state


@dataclasses.dataclass(frozen=True)
class DriverState:
    """The sampler between two steps (what the checkpoint holds).

    Attributes:
        chains: the chain states (numpy leaves in a checkpoint).
        adaptation: dt / L tuning state; timestep_fs, trajectory_steps: the production values
            (fixed when the warm-up ends).
        layout: the proposal's neighbour layout (None without a cutoff).
        n_warmup, n_burn_in, n_recorded: steps done in each phase.
        keys: (n_chains,) store keys of the chains' current states.
        n_judged, n_target_calls, n_failed, n_reallocations: counters (target calls of earlier
            segments of a resumed run included).
        divergent: (n_chains,) divergent trajectories per chain.
        screen_settings: the screen's settings (None: no screen); a resumed run must use the same.
        n_screen_calls, n_screen_rejected, n_stage_two, n_stage_two_accepted, target_wall_s,
            target_cpu_s, screen_wall_s, screen_cpu_s: see :class:`SamplerDiagnostics`.
    """

    version: int
    settings: SamplerSettings
    proposal_hash: str
    chains: hmc.ChainState
    adaptation: adapt.AdaptationState
    timestep_fs: float
    trajectory_steps: int
    layout: nb.NeighbourLayout | None
    n_warmup: int
    n_burn_in: int
    n_recorded: int
    keys: np.ndarray
    n_judged: int
    n_target_calls: int
    n_failed: int
    n_reallocations: int
    divergent: np.ndarray
    screen_settings: dict | None = None
    n_screen_calls: int = 0
    n_screen_rejected: int = 0
    n_stage_two: int = 0
    n_stage_two_accepted: int = 0
    target_wall_s: float = 0.0
    target_cpu_s: float = 0.0
    screen_wall_s: float = 0.0
    screen_cpu_s: float = 0.0

    def replace(self, **kw) -> "DriverState":
        return dataclasses.replace(self, **kw)


def _record_dtype(n_chains: int, n_atoms: int) -> np.dtype:
    """One production step of all chains, as a fixed-size binary record."""
    return np.dtype([
        ("positions", "<f8", (n_chains, n_atoms, 3)),
        ("cells", "<f8", (n_chains, 3, 3)),
        ("energies", "<f8", (n_chains,)),
        ("accepted", "?", (n_chains,)),
        ("probability", "<f8", (n_chains,)),
        ("ml_energy_error", "<f8", (n_chains,)),
        ("keys", "S64", (n_chains,)),
        ("move", "<i1"),
        ("timestep_fs", "<f8"),
        ("trajectory_steps", "<i8"),
    ])


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


class _Driver:
    """The imperative shell around the kernels: inputs checked once, kernels, judge, checkpoint."""

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
        if checkpoint is not None and store is None:
            store = os.fspath(checkpoint) + ".labels.sqlite"  # a resumed run must not repeat a target call
        if store is False:  # asked for no store (a cheap judge, e.g. a model judging itself)
            store = None
        self.judge = Judge(target, store, labels=labels, max_retries=settings.max_retries, on_failure=settings.on_failure)
        # the screen's energies are not stored: a label store is a training set of TARGET labels
        # (export_extxyz writes every row), and a cheap screen is re-run after a kill for less than it
        # costs to keep
        self.screen = None if screen is None else Judge(_check_screen(screen, target, self.judge.target, self.template),
                                                        None, max_retries=settings.max_retries,
                                                        on_failure=settings.on_failure)
        self.screen_settings = None if screen is None else self.screen.cached.settings()
        self.record_dtype = _record_dtype(settings.n_chains, len(self.template))
        self.checkpoint = None if checkpoint is None else Checkpoint(checkpoint, self.record_dtype)
        self.neighbour_layout = neighbour_layout
        self.adaptation = adapt.timestep_and_length(settings.target_acceptance, settings.max_trajectory,
                                                    10.0 * settings.timestep_fs)
        self.cell_moves = None
        if settings.ensemble != "nvt":
            mode = "orthorhombic" if settings.ensemble == "npt_orthorhombic" else "isotropic"
            self.cell_moves = hmc.cell_kernel(settings.temperature_K, settings.pressure_GPa, settings.max_log_cell_step, mode)
        self._hmc_kernels: dict = {}
        self.before: dict = {}  # counters of earlier segments of a resumed run (see _judge_counters)

    # ---- start / resume

    def start(self) -> tuple[DriverState, list]:
        """The state to continue from: the checkpoint's, or fresh chains at the start structures."""
        s = self.settings
        if self.checkpoint is not None and self.checkpoint.exists():
            state, records = self.checkpoint.load()
            if getattr(state, "version", None) != _CHECKPOINT_VERSION:
                raise ValueError(f"checkpoint {self.checkpoint.path} has version {getattr(state, 'version', None)}; "
                                 f"expected {_CHECKPOINT_VERSION}")
            if state.proposal_hash != self.phash:
                raise ValueError("checkpoint was written with other proposal parameters (hash differs)")
            diff = state.settings.differences(s)
            if diff:
                raise ValueError(f"checkpoint was written with other settings (saved, now): {diff}")
            if state.screen_settings != self.screen_settings:
                raise ValueError(f"checkpoint was written with another delayed-acceptance screen (saved, now): "
                                 f"({state.screen_settings}, {self.screen_settings})")
            chains = hmc.ChainState(*(jnp.asarray(a) for a in state.chains))
            state = state.replace(chains=chains, settings=s)
        else:
            verdict = self.judge([a.copy() for a in self.starts], list(range(s.n_chains)))
            if verdict.failed.any():
                raise ValueError(f"the target could not evaluate the start structure of chain(s) "
                                 f"{np.flatnonzero(verdict.failed).tolist()}")
            screen_energies = None
            if self.screen is not None:
                cheap = self.screen([a.copy() for a in self.starts], list(range(s.n_chains)))
                if cheap.failed.any():
                    raise ValueError(f"the screen could not evaluate the start structure of chain(s) "
                                     f"{np.flatnonzero(cheap.failed).tolist()}")
                screen_energies = cheap.energies_eV
            x0 = np.stack([a.positions for a in self.starts])
            c0 = np.stack([a.cell.array for a in self.starts])
            chains = hmc.init(x0, c0, verdict.energies_eV, s.seed, screen_energies)
            state = DriverState(
                version=_CHECKPOINT_VERSION, settings=s, proposal_hash=self.phash, chains=chains,
                adaptation=self.adaptation.init(s.timestep_fs, s.trajectory_steps), timestep_fs=s.timestep_fs,
                trajectory_steps=s.trajectory_steps, layout=self._initial_layout(x0, c0), n_warmup=0, n_burn_in=0,
                n_recorded=0, keys=verdict.keys, n_judged=len(set(verdict.keys.tolist())),
                n_target_calls=0, n_failed=0, n_reallocations=0,
                divergent=np.zeros(s.n_chains, np.int64), screen_settings=self.screen_settings)
            state = state.replace(**self._judge_values())
            records = []
        self.before = {name: getattr(state, name) - value for name, value in self._judge_values().items()}
        state = self._judge_counters(state)
        return state.replace(chains=shard_chains(state.chains, s.n_chains)), records

    def _judge_values(self) -> dict:
        """This process's judge counters, by DriverState field."""
        out = dict(n_target_calls=self.judge.n_target_calls, target_wall_s=self.judge.wall_s,
                   target_cpu_s=self.judge.cpu_s)
        if self.screen is not None:
            out.update(n_screen_calls=self.screen.n_target_calls, screen_wall_s=self.screen.wall_s,
                       screen_cpu_s=self.screen.cpu_s)
        return out

    def _judge_counters(self, state: DriverState) -> DriverState:
        """``state`` with the judges' counters: earlier segments' plus this process's."""
        return state.replace(**{name: self.before.get(name, 0) + v for name, v in self._judge_values().items()})

    def _initial_layout(self, x0, c0):
        if self.neighbour_layout is not None:
            return self.neighbour_layout
        if self.proposal.cutoff is None:
            return None
        dense = "auto" if getattr(self.proposal, "prefers_dense_neighbours", False) else None
        layout, _ = nb.allocate(x0, c0, tuple(self.pbc.tolist()), float(self.proposal.cutoff), self.settings.skin_A,
                                batch=True, max_neighbours=dense)
        return layout

    # ---- the phases of the run

    def total_steps(self) -> int:
        s = self.settings
        return s.warmup_steps + s.n_burn_in + s.n_steps

    def steps_done(self, state: DriverState) -> int:
        return state.n_warmup + state.n_burn_in + state.n_recorded

    def phase(self, state: DriverState) -> tuple[str, int]:
        """("warmup" | "burn_in" | "production", index of the step within its phase)."""
        s = self.settings
        if state.n_warmup < s.warmup_steps:
            return "warmup", state.n_warmup
        if state.n_burn_in < s.n_burn_in:
            return "burn_in", state.n_burn_in
        return "production", state.n_recorded

    def is_cell_move(self, state: DriverState) -> bool:
        return self.cell_moves is not None and self.phase(state)[1] % 2 == 1

    def dt_and_length(self, state: DriverState) -> tuple[float, int]:
        if self.phase(state)[0] == "warmup":
            return self.adaptation.parameters(state.adaptation)
        return state.timestep_fs, state.trajectory_steps

    # ---- propose

    def _hmc_kernel(self, layout):
        if layout not in self._hmc_kernels:
            self._hmc_kernels[layout] = hmc.hmc_kernel(self.proposal, self.numbers, self.masses,
                                                       self.settings.temperature_K, layout=layout,
                                                       timestep_jitter=self.settings.timestep_jitter)
        return self._hmc_kernels[layout]

    def propose_hmc(self, state: DriverState) -> tuple[DriverState, hmc.Proposal, np.ndarray]:
        """The ML trajectories of all chains, re-run with a grown layout until none overflowed.

        A divergent trajectory never grows the layout (its neighbour demand is the blow-up's, and
        it is rejected anyway; when its list also overflowed, the divergence is judged on the
        overflowed list).

        Returns (state, proposal, judged): ``judged`` (n_chains,) bool marks the chains whose
        proposal goes to the target (not divergent, no overflow).
        """
        dt, n_traj = self.dt_and_length(state)
        for _ in range(_MAX_REALLOCATIONS + 1):
            prop = self._hmc_kernel(state.layout).propose(state.chains, self.params, dt, n_traj)
            overflow, divergent = np.asarray(prop.overflow), np.asarray(prop.divergent)
            grow = overflow & ~divergent
            if not grow.any():
                return state, prop, ~(overflow | divergent)
            layout = nb.reallocate_for(state.layout, np.asarray(state.chains.positions), np.asarray(state.chains.cell),
                                       int(np.max(np.asarray(prop.max_pairs)[grow])),
                                       int(np.max(np.asarray(prop.max_per_atom)[grow])),
                                       capacity_factor=1.25, batch=True)
            state = state.replace(layout=layout, n_reallocations=state.n_reallocations + 1)
        raise RuntimeError(f"neighbour list still overflows after {_MAX_REALLOCATIONS} reallocations: {state.layout}")

    # ---- judge

    def judge_configurations(self, state: DriverState, positions, cells, judged: np.ndarray):
        """Target energies (+inf where not judged or failed) and store keys of the proposals."""
        idx = np.flatnonzero(judged)
        energies = np.full(self.settings.n_chains, np.inf)
        keys = np.array(state.keys, dtype=object)
        if idx.size:
            configs = [self._atoms(positions[i], cells[i]) for i in idx]
            verdict = self.judge(configs, idx.tolist())
            energies[idx] = verdict.energies_eV
            keys[idx] = verdict.keys
        n_new = len(set(keys[idx].tolist())) if idx.size else 0
        return energies, keys, n_new

    def screen_configurations(self, positions, cells, mask: np.ndarray) -> np.ndarray:
        """The screen's energies (eV) of the proposals where ``mask`` (+inf elsewhere or failed)."""
        idx = np.flatnonzero(mask)
        energies = np.full(self.settings.n_chains, np.inf)
        if idx.size:
            energies[idx] = self.screen([self._atoms(positions[i], cells[i]) for i in idx], idx.tolist()).energies_eV
        return energies

    def _atoms(self, positions, cell):
        a = self.template.copy()
        a.calc = None
        a.positions = np.asarray(positions, np.float64)
        a.cell = np.asarray(cell, np.float64)
        return a

    # ---- one step

    def step(self, state: DriverState) -> tuple[DriverState, np.ndarray | None]:
        """propose -> judge -> accept -> record; the record (production) or None."""
        cell_move = self.is_cell_move(state)
        dt, n_traj = self.dt_and_length(state)
        chains = state.chains
        if cell_move:
            prop = self.cell_moves.propose(chains)
            positions, cells = np.asarray(prop.positions), np.asarray(prop.cell)
            judged = np.ones(self.settings.n_chains, bool)
            ml_error = np.zeros(self.settings.n_chains)
        else:
            state, prop, judged = self.propose_hmc(state)
            positions, cells = np.asarray(prop.positions), np.asarray(chains.cell)
            ml_error = np.where(judged, np.asarray(prop.ml_energy_error), np.nan)
            state = state.replace(divergent=state.divergent + np.asarray(prop.divergent))
        kernel = self.cell_moves if cell_move else self._hmc_kernel(state.layout)
        screening = None
        if self.screen is not None:  # delayed acceptance: stage one on the screen's energies
            screening = kernel.screen(chains, prop, self.screen_configurations(positions, cells, judged))
            passed = np.asarray(screening.passed)
            state = state.replace(n_screen_rejected=state.n_screen_rejected + int(np.sum(judged & ~passed)),
                                  n_stage_two=state.n_stage_two + int(np.sum(passed)))
            judged = passed
        energies, keys, n_new = self.judge_configurations(state, positions, cells, judged)
        chains, info = kernel.accept(chains, prop, energies, screening)
        accepted = np.asarray(info.accepted)
        if screening is not None:
            state = state.replace(n_stage_two_accepted=state.n_stage_two_accepted + int(accepted.sum()))
        state = self._judge_counters(state)
        state = state.replace(chains=chains, keys=np.where(accepted, keys, state.keys).astype(str),
                              n_judged=state.n_judged + n_new, n_failed=self.judge.n_failed)
        phase, _ = self.phase(state)
        if phase == "warmup":
            return self._end_warmup_step(state, cell_move, info, ml_error), None
        if phase == "burn_in":
            return state.replace(n_burn_in=state.n_burn_in + 1), None
        rec = np.zeros((), self.record_dtype)
        rec["positions"], rec["cells"] = np.asarray(chains.positions), np.asarray(chains.cell)
        rec["energies"], rec["accepted"] = np.asarray(chains.target_energy), accepted
        rec["probability"], rec["ml_energy_error"] = np.asarray(info.probability), ml_error
        rec["keys"] = np.char.encode(state.keys.astype(str), "ascii")
        rec["move"], rec["timestep_fs"], rec["trajectory_steps"] = int(cell_move), dt, n_traj
        return state.replace(n_recorded=state.n_recorded + 1), rec

    def _end_warmup_step(self, state, cell_move, info, ml_error) -> DriverState:
        adaptation = state.adaptation
        if not cell_move:
            # the Metropolis probability of the move: with a screen 1[stage one] a2, whose mean
            # estimates the two-stage acceptance without a target call for the stage-one rejections
            a = float(np.mean(np.asarray(info.probability)))
            a_ml = float(np.mean(np.asarray(hmc.acceptance_probability(ml_error, self.settings.temperature_K))))
            adaptation = self.adaptation.update(adaptation, a, a_ml)
        state = state.replace(adaptation=adaptation, n_warmup=state.n_warmup + 1)
        if state.n_warmup == self.settings.warmup_steps:
            dt, n_traj = self.adaptation.final(adaptation)
            zeros = jnp.zeros_like(state.chains.n_steps)
            state = state.replace(timestep_fs=dt, trajectory_steps=n_traj,
                                  chains=state.chains._replace(n_accepted=zeros, n_steps=zeros))
        return state

    # ---- persistence

    def save(self, state: DriverState, record: np.ndarray | None) -> None:
        if self.checkpoint is None:
            return
        if record is not None:
            self.checkpoint.append(record)
        self.checkpoint.save(state.replace(chains=hmc.ChainState(*(np.asarray(a) for a in state.chains))))

    # ---- result

    def result(self, state: DriverState, records: list) -> SampleResult:
        from slhmc_jax.analysis.diagnostics import mcmc_diagnostics

        s = self.settings
        rec = np.stack(records[: s.n_steps])
        t = lambda a: np.ascontiguousarray(np.moveaxis(a, 0, 1))  # noqa: E731  (steps, chains) -> (chains, steps)
        positions, cells, energies, accepted = t(rec["positions"]), t(rec["cells"]), t(rec["energies"]), t(rec["accepted"])
        move = rec["move"].astype(np.int64)
        observables = {"target_energy_eV": energies}
        if s.ensemble != "nvt":
            lengths = np.linalg.norm(cells, axis=-1)
            observables.update(volume_A3=np.abs(np.linalg.det(cells)), a_A=lengths[..., 0], b_A=lengths[..., 1],
                               c_A=lengths[..., 2])
        ml_error = t(rec["ml_energy_error"])
        mcmc = mcmc_diagnostics(observables, accepted, n_target_calls=state.n_judged, ml_energy_error=ml_error[:, move == 0])
        n_traj = s.warmup_steps + s.n_burn_in + s.n_steps
        frac = state.divergent / max(1, math.ceil(n_traj / (2 if self.cell_moves else 1)))
        if np.any(frac > DIVERGENT_WARNING_FRACTION):
            warnings.warn(f"{int(state.divergent.sum())} ML trajectories diverged (per chain {state.divergent.tolist()}; "
                          f"non-finite or an energy error above {hmc.DIVERGENCE_KT:g} kT): the proposal model is NaN or "
                          f"wild somewhere, or dt is too large; those proposals were rejected without a target call, "
                          f"which is exact but wasteful", RuntimeWarning, stacklevel=3)
        diag = SamplerDiagnostics(
            mcmc=mcmc, timestep_fs=float(state.timestep_fs), trajectory_steps=int(state.trajectory_steps),
            ml_energy_error_eV=ml_error, acceptance_probability=t(rec["probability"]), move=move,
            production_timestep_fs=rec["timestep_fs"].copy(), production_trajectory_steps=rec["trajectory_steps"].copy(),
            warmup=state.adaptation.history, warmup_steps=s.warmup_steps, burn_in_steps=s.n_burn_in,
            neighbour_reallocations=int(state.n_reallocations),
            max_neighbours=None if state.layout is None else state.layout.max_neighbours,
            n_judged=int(state.n_judged), n_target_calls=int(state.n_target_calls),
            n_from_store=int(self.judge.n_from_store), n_failed=int(state.n_failed),
            divergent_trajectories=state.divergent.copy(), target_wall_s=float(state.target_wall_s),
            target_cpu_s=float(state.target_cpu_s), screened=self.screen is not None,
            n_screen_calls=int(state.n_screen_calls), n_screen_rejected=int(state.n_screen_rejected),
            n_stage_two=int(state.n_stage_two), n_stage_two_accepted=int(state.n_stage_two_accepted),
            screen_wall_s=float(state.screen_wall_s), screen_cpu_s=float(state.screen_cpu_s))
        return SampleResult(
            positions=positions, cells=cells, target_energies=energies, accepted=accepted,
            acceptance_rate=accepted.mean(1), hmc_acceptance_rate=accepted[:, move == 0].mean(1),
            cell_acceptance_rate=accepted[:, move == 1].mean(1) if self.cell_moves else None,
            store_keys=np.char.decode(t(rec["keys"]), "ascii"), atomic_numbers=self.numbers.copy(),
            pbc=self.pbc.copy(), diagnostics=diag, proposal_hash=self.phash)


def _check_screen(screen, target, target_as_target, template):
    """The delayed-acceptance screen as a Target, checked against the system and the target.

    ValueError: the screen is the target object itself (stage one would cost what it saves), its
    declared species do not cover the system, or its declared periodicity excludes the system or
    differs from the target's (``targets.base.declared_periodic``). A warning: a distinct screen
    object with the target's settings (the same method computed twice; plain functions excepted,
    whose settings are only their names).
    """
    from slhmc_jax.targets.base import as_target, check_evaluable, declared_periodic

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
    driver = _Driver(atoms, proposal, target, settings, store, labels, checkpoint, neighbour_layout, screen)
    state, records = driver.start()
    from tqdm.auto import tqdm

    with tqdm(total=driver.total_steps(), initial=driver.steps_done(state), disable=not progress, desc="SLHMC") as bar:
        while len(records) < settings.n_steps:
            state, record = driver.step(state)
            if record is not None:
                records.append(record)
            driver.save(state, record)
            bar.update(1)
    return driver.result(state, records)
