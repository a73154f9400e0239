"""Labelled structures: read them (ase.Atoms, extxyz, label store), check them, split them.

Host-side NumPy only: nothing here compiles, so every data error surfaces before training starts.

Labels are read, in this order of precedence, from
  1. ``atoms.info["REF_energy"]``, ``atoms.arrays["REF_forces"]``, ``atoms.info["REF_stress"]``
     (the keys :meth:`slhmc_jax.targets.store.LabelStore.export_extxyz` writes and mace-torch reads);
  2. the results of an attached calculator (ASE's ``SinglePointCalculator``, which is what
     ``ase.io.read`` attaches for extxyz ``energy`` / ``forces`` / ``stress``);
  3. ``atoms.info["energy"]``, ``atoms.arrays["forces"]``, ``atoms.info["stress"]``.
Units: energy eV, forces eV/A, stress eV/A^3 (ASE sign convention; Voigt (6,) or (3, 3)).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

import numpy as np

ENERGY_KEYS = ("REF_energy", "energy")
FORCES_KEYS = ("REF_forces", "forces")
STRESS_KEYS = ("REF_stress", "stress")


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledStructure:
    """One configuration and its reference labels.

    Attributes:
        numbers: (n,) int atomic numbers.
        positions: (n, 3) float, A.
        cell: (3, 3) float, A (rows are lattice vectors).
        pbc: (3,) bool.
        energy_eV: total energy, eV (None: unlabelled, e.g. a configuration to pseudo-label).
        forces_eV_A: (n, 3) eV/A or None.
        stress_eV_A3: (3, 3) eV/A^3 (ASE sign convention) or None.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy_eV: float | None = None
    forces_eV_A: np.ndarray | None = None
    stress_eV_A3: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def periodic(self) -> bool:
        return bool(np.all(self.pbc))

    def to_atoms(self):
        """An ``ase.Atoms`` with the labels on a SinglePointCalculator."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = ase.Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy_eV is not None:
            results["energy"] = self.energy_eV
        if self.forces_eV_A is not None:
            results["forces"] = self.forces_eV_A
        if self.stress_eV_A3 is not None:
            results["stress"] = self.stress_eV_A3
        atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    def with_labels(self, energy_eV, forces_eV_A, stress_eV_A3) -> "LabelledStructure":
        return dataclasses.replace(self, energy_eV=energy_eV, forces_eV_A=forces_eV_A, stress_eV_A3=stress_eV_A3)


def stress_matrix(stress) -> np.ndarray | None:
    """(3, 3) stress from Voigt (xx, yy, zz, yz, xz, xy), a (9,) vector or a (3, 3) matrix."""
    if stress is None:
        return None
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        return s.reshape(3, 3)
    raise ValueError(f"stress must be Voigt (6,), (9,) or (3, 3); got shape {s.shape}")


def _first(mapping, keys):
    for k in keys:
        if k in mapping and mapping[k] is not None:
            return mapping[k]
    return None


def from_atoms(atoms) -> LabelledStructure:
    """Labels of one ``ase.Atoms`` (see the module docstring for the keys read)."""
    results = {}
    calc = getattr(atoms, "calc", None)
    if calc is not None and getattr(calc, "results", None):
        results = calc.results
    energy = _first(atoms.info, ENERGY_KEYS[:1])
    if energy is None:
        energy = results.get("energy", results.get("free_energy"))
    if energy is None:
        energy = _first(atoms.info, ENERGY_KEYS[1:])
    forces = _first(atoms.arrays, FORCES_KEYS[:1])
    if forces is None:
        forces = results.get("forces")
    if forces is None:
        forces = _first(atoms.arrays, FORCES_KEYS[1:])
    stress = _first(atoms.info, STRESS_KEYS[:1])
    if stress is None:
        stress = results.get("stress")
    if stress is None:
        stress = _first(atoms.info, STRESS_KEYS[1:])
    return LabelledStructure(
        numbers=np.asarray(atoms.get_atomic_numbers(), dtype=np.int64),
        positions=np.asarray(atoms.get_positions(), dtype=np.float64),
        cell=np.asarray(atoms.get_cell(), dtype=np.float64),
        pbc=np.asarray(atoms.get_pbc(), dtype=bool),
        energy_eV=None if energy is None else float(np.asarray(energy)),
        forces_eV_A=None if forces is None else np.asarray(forces, dtype=np.float64),
        stress_eV_A3=stress_matrix(stress),
    )


def _is_sqlite(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _from_label_store(path: str) -> list[LabelledStructure]:
    from slhmc_jax.targets.store import LabelStore

    out = []
    for numbers, pos, cell, pbc, energy, forces, stress in LabelStore(path).rows():
        f, s = json.loads(forces) if forces else None, json.loads(stress) if stress else None
        out.append(LabelledStructure(
            numbers=np.asarray(json.loads(numbers), dtype=np.int64),
            positions=np.asarray(json.loads(pos), dtype=np.float64),
            cell=np.asarray(json.loads(cell), dtype=np.float64).reshape(3, 3),
            pbc=np.asarray(json.loads(pbc), dtype=bool).reshape(3),
            energy_eV=None if energy is None else float(energy),
            forces_eV_A=None if f is None else np.asarray(f, dtype=np.float64),
            stress_eV_A3=stress_matrix(s),
        ))
    return out


def read_structures(source, *, name: str = "train") -> list[LabelledStructure]:
    """Labelled structures from a list of ase.Atoms / LabelledStructure, an extxyz (any ASE-readable)
    file, or a label-store (SQLite) file.

    Args:
        source: the data.
        name: what the data is ("train", "valid", "replay"), for error messages.
    """
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ValueError(f"{name} data: no file at {path}")
        if _is_sqlite(path):
            return _from_label_store(path)
        import ase.io

        try:
            frames = ase.io.read(path, index=":")
        except Exception as err:  # noqa: BLE001  (ASE raises many types; re-raise as a data error)
            raise ValueError(f"{name} data: cannot read {path} with ase.io.read ({type(err).__name__}: {err})") from err
        return [from_atoms(a) for a in frames]
    if isinstance(source, LabelledStructure):
        return [source]
    if hasattr(source, "get_atomic_numbers"):  # a single ase.Atoms
        return [from_atoms(source)]
    if not isinstance(source, Iterable):
        raise ValueError(f"{name} data must be a list of ase.Atoms, an extxyz path or a label-store path; got {type(source).__name__}")
    out = []
    for k, item in enumerate(source):
        if isinstance(item, LabelledStructure):
            out.append(item)
        elif hasattr(item, "get_atomic_numbers"):
            out.append(from_atoms(item))
        else:
            raise ValueError(f"{name} data item {k} is a {type(item).__name__}, not an ase.Atoms")
    return out


def check_structures(structures: Sequence[LabelledStructure], *, name: str, species_table=None, need_energy: bool = True,
                     need_forces: bool = False, need_stress: bool = False, allow_empty: bool = False) -> None:
    """Raise ValueError on unusable data, naming the set, the structure index and the problem.

    Checks: non-empty; known elements (``species_table.check``, the model's species table);
    finite positions and cell; energies present (``need_energy``) and finite; forces present where
    the loss weights them (``need_forces``), of shape (n, 3) and finite; stress present on every
    periodic structure where the loss weights it (``need_stress``) and finite.
    """
    if not structures:
        if allow_empty:
            return
        raise ValueError(f"{name} data is empty: fine-tuning needs at least one labelled structure")
    for k, s in enumerate(structures):
        where = f"{name} structure {k} ({s.n_atoms} atoms)"
        if s.n_atoms == 0:
            raise ValueError(f"{where}: no atoms")
        if s.positions.shape != (s.n_atoms, 3) or not np.all(np.isfinite(s.positions)):
            raise ValueError(f"{where}: positions must be finite, shape (n, 3)")
        if not np.all(np.isfinite(s.cell)):
            raise ValueError(f"{where}: cell has non-finite entries")
        if species_table is not None:
            try:
                species_table.check(s.numbers)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        if s.energy_eV is None:
            if need_energy:
                raise ValueError(f"{where}: no energy label (looked for info keys {ENERGY_KEYS} and calculator results)")
        elif not np.isfinite(s.energy_eV):
            raise ValueError(f"{where}: energy label is {s.energy_eV} eV (NaN or infinite labels are not allowed)")
        if s.forces_eV_A is None:
            if need_forces:
                raise ValueError(f"{where}: no force labels, but the loss weights forces (forces_weight > 0); "
                                 f"set forces_weight=0 or provide forces (arrays keys {FORCES_KEYS} or calculator results)")
        else:
            if s.forces_eV_A.shape != (s.n_atoms, 3):
                raise ValueError(f"{where}: forces have shape {s.forces_eV_A.shape}, expected ({s.n_atoms}, 3)")
            if not np.all(np.isfinite(s.forces_eV_A)):
                raise ValueError(f"{where}: force labels contain NaN or infinite values")
        if s.stress_eV_A3 is None:
            if need_stress and s.periodic:
                raise ValueError(f"{where}: no stress label on a periodic structure, but the loss weights stress "
                                 f"(stress_weight > 0); set stress_weight=0 or provide stress")
        elif not np.all(np.isfinite(s.stress_eV_A3)):
            raise ValueError(f"{where}: stress labels contain NaN or infinite values")


def split_validation(structures: Sequence[LabelledStructure], fraction: float, seed: int):
    """(train, valid): a seeded random ``fraction`` (at least one structure) held out for validation."""
    n = len(structures)
    if n < 2:
        raise ValueError(f"cannot hold out a validation set from {n} training structure(s); pass valid= or more data")
    n_valid = min(n - 1, max(1, int(round(fraction * n))))
    order = np.random.default_rng([int(seed), 7]).permutation(n)
    valid_idx = set(order[:n_valid].tolist())
    return ([s for k, s in enumerate(structures) if k not in valid_idx],
            [s for k, s in enumerate(structures) if k in valid_idx])


def fingerprint(structures: Sequence[LabelledStructure]) -> str:
    """sha256 of the configurations and labels (a checkpoint is only resumed on the same data)."""
    import hashlib

    h = hashlib.sha256()
    for s in structures:
        for a in (s.numbers, s.positions, s.cell, s.pbc):
            h.update(np.ascontiguousarray(a).tobytes())
        for a in (s.energy_eV, s.forces_eV_A, s.stress_eV_A3):
            h.update(b"-" if a is None else np.ascontiguousarray(np.asarray(a, np.float64)).tobytes())
    return h.hexdigest()
