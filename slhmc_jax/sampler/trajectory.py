"""The one trajectory type: frames of one system along chains, with what the judge said of them.

A :class:`Trajectory` is what the sampler returns (:class:`~slhmc_jax.sampler.result.SampleResult`
extends it with diagnostics), what direct MD returns, what the workflow and validation write into
a run directory and what the analysis reads: one shape from the sampler to the report, saved and
loaded as one ``.npz`` (plain arrays, no pickle).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from slhmc_jax.files import write_npz

_OPTIONAL = ("target_energies", "accepted", "store_keys")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trajectory:
    """Frames of one system grouped in chains, in sampling order along each chain.

    Attributes:
        positions: (n_chains, n_frames, n_atoms, 3) float64, Angstrom.
        cells: (n_chains, n_frames, 3, 3) float64, Angstrom (rows are the cell vectors).
        atomic_numbers: (n_atoms,) int64.
        pbc: (3,) bool.
        target_energies: (n_chains, n_frames) float64 eV (the judge's energy of each frame), or None.
        accepted: (n_chains, n_frames) bool, whether the step that led to the frame moved the chain
            (the Metropolis decision; all True for MD), or None.
        store_keys: (n_chains, n_frames) str, the label-store key of each frame, or None.
    """

    positions: np.ndarray
    cells: np.ndarray
    atomic_numbers: np.ndarray
    pbc: np.ndarray
    target_energies: np.ndarray | None = None
    accepted: np.ndarray | None = None
    store_keys: np.ndarray | None = None

    def __post_init__(self):
        pos = np.asarray(self.positions, np.float64)
        if pos.ndim != 4 or pos.shape[-1] != 3:
            raise ValueError(f"positions must have shape (n_chains, n_frames, n_atoms, 3); got {pos.shape}")
        if pos.shape[0] == 0 or pos.shape[1] == 0:
            raise ValueError(f"a trajectory needs at least one chain and one frame; got shape {pos.shape}")
        cells = np.asarray(self.cells, np.float64)
        if cells.shape != pos.shape[:2] + (3, 3):
            raise ValueError(f"cells must have shape {pos.shape[:2] + (3, 3)}; got {cells.shape}")
        numbers = np.asarray(self.atomic_numbers).astype(np.int64).reshape(-1)
        if numbers.size != pos.shape[2]:
            raise ValueError(f"atomic_numbers has {numbers.size} entries but the frames have {pos.shape[2]} atoms")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen dataclass)
        set_("positions", pos)
        set_("cells", cells)
        set_("atomic_numbers", numbers)
        set_("pbc", np.broadcast_to(np.asarray(self.pbc, bool), (3,)).copy())
        for name, dtype in zip(_OPTIONAL, (np.float64, bool, str)):
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value).astype(dtype)
            if value.shape != pos.shape[:2]:
                raise ValueError(f"{name} must have shape {pos.shape[:2]} (n_chains, n_frames); got {value.shape}")
            set_(name, value)

    @property
    def n_chains(self) -> int:
        return self.positions.shape[0]

    @property
    def n_frames(self) -> int:
        """Frames per chain."""
        return self.positions.shape[1]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[2]

    def frames(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[bool, bool, bool]]:
        """All frames, chain after chain, as ``(positions (F, N, 3), cells (F, 3, 3), numbers, pbc)``:
        the frame tuple :mod:`slhmc_jax.analysis.observables` reads."""
        return (self.positions.reshape((-1,) + self.positions.shape[2:]), self.cells.reshape(-1, 3, 3),
                self.atomic_numbers, tuple(bool(p) for p in self.pbc))

    def atoms_at(self, chain: int, frame: int):
        """Frame ``frame`` of ``chain`` as ase.Atoms (its target energy and store key attached where known)."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        a = ase.Atoms(numbers=self.atomic_numbers, positions=self.positions[chain, frame],
                      cell=self.cells[chain, frame], pbc=self.pbc)
        if self.target_energies is not None:
            a.calc = SinglePointCalculator(a, energy=float(self.target_energies[chain, frame]))
        if self.store_keys is not None:
            a.info["store_key"] = str(self.store_keys[chain, frame])
        return a

    def trajectory(self) -> "Trajectory":
        """The frames and labels alone (drops what a subclass adds, e.g. a SampleResult's diagnostics)."""
        return Trajectory(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Trajectory)})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the trajectory as one ``.npz`` (atomically; absent optional arrays are left out).

        A subclass's own array and number fields (an MD run's forces, a run's costs) go into the same
        file; fields that are neither (a SampleResult's diagnostics object) are not part of the file.
        """
        arrays = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "store_keys":
                arrays[f.name] = np.asarray(value).astype("U")  # fixed-width unicode, not pickled objects
                continue
            value = np.asarray(value)
            if value.dtype != object:
                arrays[f.name] = value
        return write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """A ``cls`` from a file :meth:`save` wrote (no pickle: object arrays are refused); entries that
        are not fields of ``cls`` are ignored, so ``Trajectory.load`` reads any subclass's file."""
        names = {f.name for f in dataclasses.fields(cls)}
        with np.load(path, allow_pickle=False) as data:
            missing = [n for n in ("positions", "cells", "atomic_numbers", "pbc") if n not in data.files]
            if missing:
                raise ValueError(f"{path} is not a trajectory file: it lacks {missing}")
            kw = {n: (data[n].item() if data[n].ndim == 0 else data[n]) for n in data.files if n in names}
        try:
            return cls(**kw)
        except TypeError as err:  # a required field of the subclass is not in the file
            raise ValueError(f"{path} is not a {cls.__name__} file: {err}") from None

    def select(self, chains=slice(None), frames=slice(None)) -> "Trajectory":
        """The sub-trajectory of some chains and frames (numpy indexing on the two leading axes)."""
        pick = lambda a: None if a is None else a[chains][:, frames]  # noqa: E731
        return Trajectory(positions=pick(self.positions), cells=pick(self.cells), atomic_numbers=self.atomic_numbers,
                          pbc=self.pbc, target_energies=pick(self.target_energies), accepted=pick(self.accepted),
                          store_keys=pick(self.store_keys))
