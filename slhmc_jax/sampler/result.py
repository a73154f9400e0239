"""What ``sample`` returns: the production trajectory with what the run measured about itself.

:func:`assemble` builds a :class:`SampleResult` from the run's production records (one fixed-size
record per step, :func:`record_dtype`, the rows the checkpoint appends) and the driver's final
state; it is pure apart from reading them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from slhmc_jax.sampler.counters import SamplerCounters
from slhmc_jax.sampler.settings import SamplerSettings
from slhmc_jax.sampler.trajectory import Trajectory


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
        max_neighbours: slots per atom of the dense neighbour format (None: pair format).
        counters: :class:`~slhmc_jax.sampler.counters.SamplerCounters` of the whole run (start
            structures, warm-up, burn-in and production; earlier segments of a resumed run
            included); the ``n_*`` properties below read them under their established names.
        screened: a delayed-acceptance screen was used (the screen counters are 0 without one).

    With a screen, ``acceptance_probability`` is 1[passed stage one] a2 (an unbiased estimate of
    the two-stage probability a1 a2; what warm-up tunes on).
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
    max_neighbours: int | None
    counters: SamplerCounters
    screened: bool = False

    @property
    def acceptance(self) -> float:
        return self.mcmc.acceptance

    # the counters under the names the README, the workflow and the reports use

    @property
    def n_judged(self) -> int:
        """Configurations judged (target or store): the cost of the run without a store."""
        return self.counters.judged

    @property
    def n_target_calls(self) -> int:
        """Configurations the target itself evaluated (``counters.target_evaluations``)."""
        return self.counters.target_evaluations

    @property
    def n_from_store(self) -> int:
        """Configurations answered from the label store (``counters.store_hits``)."""
        return self.counters.store_hits

    @property
    def n_failed(self) -> int:
        """Target evaluations given up on (``on_failure="reject"``)."""
        return self.counters.failed

    @property
    def divergent_trajectories(self) -> np.ndarray:
        """(n_chains,) divergent ML trajectories (rejected without a target call), warm-up and burn-in included."""
        return self.counters.divergent

    @property
    def neighbour_reallocations(self) -> int:
        return self.counters.neighbour_reallocations

    @property
    def target_wall_s(self) -> float:
        return self.counters.target_wall_s

    @property
    def target_cpu_s(self) -> float:
        return self.counters.target_cpu_s

    @property
    def n_screen_calls(self) -> int:
        """Configurations the screen evaluated (start structures included)."""
        return self.counters.screen_evaluations

    @property
    def n_screen_rejected(self) -> int:
        """Proposals stage one rejected: target evaluations saved."""
        return self.counters.screen_rejected

    @property
    def n_stage_two(self) -> int:
        """Proposals that passed stage one and went to the target."""
        return self.counters.stage_two

    @property
    def n_stage_two_accepted(self) -> int:
        return self.counters.stage_two_accepted

    @property
    def screen_wall_s(self) -> float:
        return self.counters.screen_wall_s

    @property
    def screen_cpu_s(self) -> float:
        return self.counters.screen_cpu_s

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
    """The frames of one chain of a trajectory as ase.Atoms (built on access) with the target energy."""

    def __init__(self, trajectory: Trajectory, chain: int):
        self._trajectory, self._chain = trajectory, chain

    def __len__(self) -> int:
        return self._trajectory.n_frames

    def __getitem__(self, step):
        if isinstance(step, slice):
            return [self[i] for i in range(*step.indices(len(self)))]
        return self._trajectory.atoms_at(self._chain, step)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleResult(Trajectory):
    """The production samples of every chain (warm-up and burn-in steps are not recorded).

    A :class:`~slhmc_jax.sampler.trajectory.Trajectory` (frames, ``atoms_at``, ``save``, ...) whose
    optional labels are always present, with the run's acceptance and diagnostics.

    Attributes:
        positions: (n_chains, n_steps, n_atoms, 3) Angstrom.
        cells: (n_chains, n_steps, 3, 3) Angstrom.
        target_energies: (n_chains, n_steps) eV.
        accepted: (n_chains, n_steps) bool, the Metropolis decision of each step (the state moved;
            with a screen: passed both stages).
        store_keys: (n_chains, n_steps) label-store key of each recorded state (str).
        atomic_numbers: (n_atoms,). pbc: (3,) bool.
        acceptance_rate: (n_chains,) over all production moves.
        hmc_acceptance_rate: (n_chains,) over the HMC moves.
        cell_acceptance_rate: (n_chains,) over the cell moves (None for NVT).
        diagnostics: :class:`SamplerDiagnostics`.
        proposal_hash: sha256 of the frozen proposal parameters.
    """

    acceptance_rate: np.ndarray
    hmc_acceptance_rate: np.ndarray
    cell_acceptance_rate: np.ndarray | None
    diagnostics: SamplerDiagnostics
    proposal_hash: str

    @property
    def counters(self) -> SamplerCounters:
        """The run's counters (``diagnostics.counters``)."""
        return self.diagnostics.counters

    @property
    def samples(self) -> list[ChainFrames]:
        """Per chain, the recorded states as ase.Atoms carrying the target energy (built lazily)."""
        return [ChainFrames(self, c) for c in range(self.n_chains)]

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
        d = nearest_neighbour_distances(self.frames(), pair[0], pair[1], k=1).mean(axis=(1, 2))
        return f"nn_{pair[0]}-{pair[1]}_A", chain_statistics(d.reshape(self.n_chains, self.n_frames),
                                                             self.counters.judged)


def record_dtype(n_chains: int, n_atoms: int) -> np.dtype:
    """One production step of all chains, as a fixed-size binary record (the checkpoint appends them)."""
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


def production_record(dtype: np.dtype, chains, info, ml_energy_error: np.ndarray, keys: np.ndarray, cell_move: bool,
                      timestep_fs: float, trajectory_steps: int) -> np.ndarray:
    """One production step as a :func:`record_dtype` record.

    Args:
        dtype: ``record_dtype(n_chains, n_atoms)``.
        chains: the chain states after the step (``kernels.ChainState``).
        info: the step's ``kernels.AcceptInfo`` (decisions and Metropolis probabilities).
        ml_energy_error: (n_chains,) eV. keys: (n_chains,) store keys of the chains' states (str).
        cell_move: a cell move (else HMC). timestep_fs, trajectory_steps: the dt (fs) and L used.
    """
    rec = np.zeros((), dtype)
    rec["positions"], rec["cells"] = np.asarray(chains.positions), np.asarray(chains.cell)
    rec["energies"], rec["accepted"] = np.asarray(chains.target_energy), np.asarray(info.accepted)
    rec["probability"], rec["ml_energy_error"] = np.asarray(info.probability), ml_energy_error
    rec["keys"] = np.char.encode(np.asarray(keys).astype(str), "ascii")
    rec["move"], rec["timestep_fs"], rec["trajectory_steps"] = int(cell_move), timestep_fs, trajectory_steps
    return rec


def assemble(records: Sequence[np.ndarray], *, settings: SamplerSettings, counters: SamplerCounters,
             timestep_fs: float, trajectory_steps: int, warmup: tuple, max_neighbours: int | None,
             atomic_numbers: np.ndarray, pbc: np.ndarray, proposal_hash: str, screened: bool) -> SampleResult:
    """The SampleResult of a finished run.

    Args:
        records: the production records (:func:`record_dtype`), at least ``settings.n_steps``.
        settings: the run's settings.
        counters: the run's counters.
        timestep_fs, trajectory_steps: the production dt (fs) and L.
        warmup: the tuning steps (``AdaptationState.history``).
        max_neighbours: slots per atom of the dense neighbour format (None: pair format or no list).
        atomic_numbers: (n_atoms,). pbc: (3,) bool.
        proposal_hash: sha256 of the proposal parameters.
        screened: a delayed-acceptance screen was used.
    """
    from slhmc_jax.analysis.diagnostics import mcmc_diagnostics

    rec = np.stack(records[: settings.n_steps])
    t = lambda a: np.ascontiguousarray(np.moveaxis(a, 0, 1))  # noqa: E731  (steps, chains) -> (chains, steps)
    positions, cells, energies, accepted = t(rec["positions"]), t(rec["cells"]), t(rec["energies"]), t(rec["accepted"])
    move = rec["move"].astype(np.int64)
    cell_moves = settings.ensemble != "nvt"
    observables = {"target_energy_eV": energies}
    if cell_moves:
        lengths = np.linalg.norm(cells, axis=-1)
        observables.update(volume_A3=np.abs(np.linalg.det(cells)), a_A=lengths[..., 0], b_A=lengths[..., 1],
                           c_A=lengths[..., 2])
    ml_error = t(rec["ml_energy_error"])
    diagnostics = SamplerDiagnostics(
        mcmc=mcmc_diagnostics(observables, accepted, n_judged=counters.judged,
                              ml_energy_error=ml_error[:, move == 0]),
        timestep_fs=float(timestep_fs), trajectory_steps=int(trajectory_steps), ml_energy_error_eV=ml_error,
        acceptance_probability=t(rec["probability"]), move=move, production_timestep_fs=rec["timestep_fs"].copy(),
        production_trajectory_steps=rec["trajectory_steps"].copy(), warmup=warmup,
        warmup_steps=settings.warmup_steps, burn_in_steps=settings.n_burn_in, max_neighbours=max_neighbours,
        counters=counters, screened=screened)
    return SampleResult(
        positions=positions, cells=cells, target_energies=energies, accepted=accepted,
        store_keys=np.char.decode(t(rec["keys"]), "ascii"), atomic_numbers=np.array(atomic_numbers),
        pbc=np.array(pbc, bool), acceptance_rate=accepted.mean(1), hmc_acceptance_rate=accepted[:, move == 0].mean(1),
        cell_acceptance_rate=accepted[:, move == 1].mean(1) if cell_moves else None, diagnostics=diagnostics,
        proposal_hash=proposal_hash)
