"""Append-only checkpoint of the sampler driver: what it holds, and a small state file plus a file
of fixed-size records.

``path`` holds the :class:`DriverState` (chain states with their RNG keys and energies, counters,
tuning state, neighbour layout, ...), pickled and replaced atomically after every step
(:func:`slhmc_jax.files.atomic_write`: temp file, fsync, ``os.replace``); ``path + ".records"``
holds one fixed-size binary record per production step (:func:`slhmc_jax.sampler.result.record_dtype`),
appended and fsynced *before* the state file is replaced. Each step costs O(1) I/O. On load the
records file is truncated to the number of steps the state file counts, so a kill at any instant
(even between the two writes) resumes exactly where the state file says; :func:`check_resumable`
says whether a saved state continues a given run.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any

import numpy as np

from slhmc_jax import neighbours as nb
from slhmc_jax.files import atomic_write
from slhmc_jax.sampler import adaptation as adapt
from slhmc_jax.sampler import kernels as hmc
from slhmc_jax.sampler.counters import SamplerCounters
from slhmc_jax.sampler.settings import SamplerSettings

CHECKPOINT_VERSION = 5  # 5: the counters as one SamplerCounters; 4: ChainState.screen_energy and the DA counters


@dataclasses.dataclass(frozen=True)
class DriverState:
    """The sampler between two steps (what the checkpoint holds).

    Attributes:
        version: :data:`CHECKPOINT_VERSION` of the code that wrote it.
        settings: the run's settings (a resumed run's current ones).
        proposal_hash: sha256 of the proposal parameters.
        chains: the chain states (numpy leaves in a checkpoint).
        adaptation: dt / L tuning state; timestep_fs, trajectory_steps: the production values
            (fixed when the warm-up ends).
        layout: the proposal's neighbour layout (None without a cutoff).
        n_warmup, n_burn_in, n_recorded: steps done in each phase.
        keys: (n_chains,) store keys of the chains' current states.
        counters: the run's :class:`~slhmc_jax.sampler.counters.SamplerCounters` (earlier segments
            of a resumed run included).
        screen_settings: the screen's settings (None: no screen); a resumed run must use the same.
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
    counters: SamplerCounters
    screen_settings: dict | None = None

    def replace(self, **kw) -> "DriverState":
        return dataclasses.replace(self, **kw)

    @property
    def steps_done(self) -> int:
        return self.n_warmup + self.n_burn_in + self.n_recorded

    def phase(self) -> tuple[str, int]:
        """("warmup" | "burn_in" | "production", index of the next step within its phase)."""
        s = self.settings
        if self.n_warmup < s.warmup_steps:
            return "warmup", self.n_warmup
        if self.n_burn_in < s.n_burn_in:
            return "burn_in", self.n_burn_in
        return "production", self.n_recorded

    @property
    def is_cell_move(self) -> bool:
        """Whether the next step is a cell move: NPT alternates, odd steps of each phase move the cell."""
        return self.settings.ensemble != "nvt" and self.phase()[1] % 2 == 1


def check_resumable(state: Any, settings: SamplerSettings, phash: str, screen_settings: dict | None, path) -> None:
    """ValueError unless the checkpointed ``state`` continues this run: same checkpoint version,
    proposal parameters (hash), chain-defining settings and delayed-acceptance screen."""
    version = getattr(state, "version", None)
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {version}; expected {CHECKPOINT_VERSION}")
    if state.proposal_hash != phash:
        raise ValueError("checkpoint was written with other proposal parameters (hash differs)")
    diff = state.settings.differences(settings)
    if diff:
        raise ValueError(f"checkpoint was written with other settings (saved, now): {diff}")
    if state.screen_settings != screen_settings:
        raise ValueError(f"checkpoint was written with another delayed-acceptance screen (saved, now): "
                         f"({state.screen_settings}, {screen_settings})")


class Checkpoint:
    """State file (replaced atomically) + append-only records file.

    Args:
        path: the state file; records go to ``path + ".records"``.
        record_dtype: numpy dtype of one record (fixed size).
    """

    def __init__(self, path, record_dtype: np.dtype):
        self.path = os.fspath(path)
        self.records_path = self.path + ".records"
        self.dtype = record_dtype

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def load(self) -> tuple[Any, list[np.ndarray]]:
        """(state, records): the state object and as many records as ``state.n_recorded``."""
        state = read_state(self.path)
        n = int(state.n_recorded)
        size = self.dtype.itemsize
        records: list[np.ndarray] = []
        if n:
            with open(self.records_path, "r+b") as f:
                f.truncate(n * size)  # drop a record written after the last state file (kill in between)
                data = np.frombuffer(f.read(n * size), dtype=self.dtype)
            if data.shape[0] != n:
                raise ValueError(f"checkpoint records file {self.records_path} holds {data.shape[0]} steps; "
                                 f"the state file counts {n}")
            records = [data[i].copy() for i in range(n)]
        elif os.path.exists(self.records_path):
            with open(self.records_path, "r+b") as f:
                f.truncate(0)
        return state, records

    def append(self, record: np.ndarray) -> None:
        """Append one record durably (before the state that counts it is saved)."""
        if record.dtype != self.dtype:
            raise ValueError(f"record dtype {record.dtype} is not the checkpoint's {self.dtype}")
        with open(self.records_path, "ab") as f:
            f.write(record.tobytes())
            f.flush()
            os.fsync(f.fileno())

    def save(self, state) -> None:
        """Replace the state file atomically."""
        atomic_write(self.path, lambda f: pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL))


def read_state(path):
    """The state object of a checkpoint file (raises FileNotFoundError, or ValueError if unreadable)."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except (EOFError, pickle.UnpicklingError) as err:
            raise ValueError(f"checkpoint {path} is not a readable state file: {err}") from None
