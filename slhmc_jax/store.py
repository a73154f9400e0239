"""Append-only label store (SQLite, WAL, synchronous=FULL) and the ``cached`` target wrapper.

Key: sha256 of (atomic numbers, positions rounded to 1e-8 A, cell rounded to 1e-8 A, pbc) and
the target's full settings (JSON, sorted keys). Every result is committed before it is returned,
so a killed driver loses at most the evaluation that was running.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any, Sequence

import numpy as np

from slhmc_jax.targets.base import TargetResult

POSITION_DECIMALS = 8  # positions and cell rounded to 1e-8 Angstrom for the key


def config_key(atoms, settings: dict) -> str:
    """sha256 hex of the rounded configuration and the settings."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.get_atomic_numbers(), dtype=np.int64).tobytes())
    h.update(np.round(atoms.get_positions(), POSITION_DECIMALS).astype(np.float64).tobytes())
    h.update(np.round(np.asarray(atoms.get_cell()), POSITION_DECIMALS).astype(np.float64).tobytes())
    h.update(np.asarray(atoms.get_pbc(), dtype=np.int8).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


class LabelStore:
    """SQLite label store: ``get(atoms, settings)``, ``put(atoms, settings, result)``, ``export_extxyz``."""

    def __init__(self, path):
        self.path = str(path)
        self._con = sqlite3.connect(self.path, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS labels (key TEXT PRIMARY KEY, numbers TEXT, positions TEXT, cell TEXT,"
            " pbc TEXT, settings TEXT, energy_eV REAL, forces TEXT, stress TEXT, info TEXT)")

    def __len__(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def get(self, atoms, settings: dict) -> TargetResult | None:
        row = self._con.execute("SELECT energy_eV, forces, stress, info FROM labels WHERE key=?",
                                (config_key(atoms, settings),)).fetchone()
        if row is None:
            return None
        f = json.loads(row[1])
        s = json.loads(row[2])
        return TargetResult(energy_eV=row[0], forces_eV_A=None if f is None else np.array(f),
                            stress_eV_A3=None if s is None else np.array(s), info=json.loads(row[3]))

    def put(self, atoms, settings: dict, result: TargetResult) -> None:
        """Insert and commit durably before returning.

        A key already present keeps its energy; a stored row without forces (stress) gains the
        forces (stress) of a later result for the same key; nothing is ever deleted.
        """
        tolist = lambda x: None if x is None else np.asarray(x).tolist()  # noqa: E731
        self._con.execute(
            "INSERT INTO labels VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key) DO UPDATE SET"
            " forces = CASE WHEN labels.forces = 'null' THEN excluded.forces ELSE labels.forces END,"
            " stress = CASE WHEN labels.stress = 'null' THEN excluded.stress ELSE labels.stress END",
            (config_key(atoms, settings), json.dumps(atoms.get_atomic_numbers().tolist()),
             json.dumps(atoms.get_positions().tolist()), json.dumps(np.asarray(atoms.get_cell()).tolist()),
             json.dumps(atoms.get_pbc().tolist()), json.dumps(settings, sort_keys=True, default=str),
             float(result.energy_eV), json.dumps(tolist(result.forces_eV_A)), json.dumps(tolist(result.stress_eV_A3)),
             json.dumps(result.info, default=str)))

    def rows(self):
        return self._con.execute("SELECT numbers, positions, cell, pbc, energy_eV, forces, stress FROM labels"
                                 " ORDER BY rowid").fetchall()

    def export_extxyz(self, filename) -> int:
        """Write all labels as extxyz with REF_energy (eV), REF_forces (eV/A), REF_stress (eV/A^3, Voigt).

        These are the keys mace-torch's loader reads with ``--energy_key REF_energy`` etc.
        Returns the number of frames written.
        """
        import ase
        import ase.io

        frames = []
        for numbers, pos, cell, pbc, e, f, s in self.rows():
            a = ase.Atoms(numbers=json.loads(numbers), positions=json.loads(pos), cell=json.loads(cell),
                          pbc=json.loads(pbc))
            a.info["REF_energy"] = e
            f, s = json.loads(f), json.loads(s)
            if f is not None:
                a.arrays["REF_forces"] = np.array(f)
            if s is not None:
                a.info["REF_stress"] = np.array(s)
            frames.append(a)
        ase.io.write(filename, frames, format="extxyz")
        return len(frames)


class CachedTarget:
    """Target wrapper: answers from the store, evaluates only the missing configurations in one batch."""

    def __init__(self, target, store: LabelStore):
        self.target = target
        self.store = store

    def _settings(self) -> dict:
        s = getattr(self.target, "settings", None)
        return s() if callable(s) else {"target": repr(self.target)}

    def evaluate(self, atoms_list: Sequence[Any]) -> list[TargetResult]:
        settings = self._settings()
        need_f = bool(getattr(self.target, "compute_forces", False))
        need_s = bool(getattr(self.target, "compute_stress", False))

        def usable(r, atoms):  # a cached result must carry what this target computes
            return (r is not None and not (need_f and r.forces_eV_A is None)
                    and not (need_s and r.stress_eV_A3 is None and atoms.pbc.all()))

        results: list[TargetResult | None] = []
        for a in atoms_list:
            r = self.store.get(a, settings)
            results.append(r if usable(r, a) else None)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            todo = [atoms_list[i] for i in missing]
            stream = getattr(self.target, "evaluate_streaming", None)
            if stream is not None:  # persist each result as it arrives; slots keep chain identity
                pairs = stream(todo, slots=missing)
            else:
                pairs = enumerate(self.target.evaluate(todo))
            for j, r in pairs:
                self.store.put(todo[j], settings, r)
                results[missing[j]] = r
        return results  # type: ignore[return-value]

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray:
        return np.array([r.energy_eV for r in self.evaluate(atoms_list)], dtype=np.float64)


def cached(target, store) -> CachedTarget:
    """Wrap ``target`` with a LabelStore (or a path to one)."""
    if not isinstance(store, LabelStore):
        store = LabelStore(store)
    return CachedTarget(target, store)
