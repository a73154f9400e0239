"""Append-only checkpoint of the sampler driver: a small state file and a file of fixed-size records.

``path`` holds the driver state (chain states with their RNG keys and energies, counters, tuning
state, neighbour layout, ...), pickled and replaced atomically (write, fsync, ``os.replace``) after
every step; ``path + ".records"`` holds one fixed-size binary record per production step, appended
and fsynced *before* the state file is replaced. Each step costs O(1) I/O. On load the records file
is truncated to the number of steps the state file counts, so a kill at any instant (even between
the two writes) resumes exactly where the state file says.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np


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
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def read_state(path):
    """The state object of a checkpoint file (raises FileNotFoundError, or ValueError if unreadable)."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except (EOFError, pickle.UnpicklingError) as err:
            raise ValueError(f"checkpoint {path} is not a readable state file: {err}") from None
