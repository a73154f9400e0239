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

from slhmc_jax.targets.base import (
    Capabilities,
    TargetEvaluationError,
    TargetResult,
    capabilities,
    default_chains,
    stream,
    with_forces,
)
from slhmc_jax.targets.stack import TargetWrapper, as_target

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
        return self.get_by_key(config_key(atoms, settings))

    def get_by_key(self, key: str) -> TargetResult | None:
        """The stored result with this key, or None."""
        row = self._con.execute("SELECT energy_eV, forces, stress, info FROM labels WHERE key=?", (key,)).fetchone()
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


class CachedTarget(TargetWrapper):
    """A Target answered from a label store where it can be: only configurations missing from the
    store are evaluated (each distinct one once per batch, in one batch of the wrapped target), and
    every result is committed to the store as it arrives, before anything uses it.

    A stored row is used only if it carries what the wrapped target computes (forces, and stress
    for periodic cells); otherwise the configuration is evaluated again and the row gains them.

    Args:
        target: anything :func:`slhmc_jax.targets.stack.as_target` accepts.
        store: a LabelStore, or None (no persistence; duplicates within a batch still cost one call).

    Attributes:
        target_evaluations: configurations the wrapped target evaluated (successfully) through this object.
        store_hits: configurations answered from the store.
    """

    def __init__(self, target, store: LabelStore | None):
        super().__init__(target)
        self.store = store
        self.target_evaluations = 0
        self.store_hits = 0
        self._settings = self.target.settings()

    @property
    def judged(self) -> int:
        """Configurations answered (target evaluations + store hits); duplicates within a batch not counted."""
        return self.target_evaluations + self.store_hits

    def settings(self) -> dict:
        return self._settings

    def rewrap(self, inner) -> "CachedTarget":
        """A CachedTarget of ``inner`` on the same store (its own counters)."""
        return CachedTarget(inner, self.store)

    def key(self, atoms) -> str:
        """The store key of ``atoms`` under this target's settings."""
        return config_key(atoms, self._settings)

    @staticmethod
    def _usable(r: TargetResult | None, atoms, needs: Capabilities) -> bool:
        need_s = needs.stress and bool(atoms.pbc.all())
        return (r is not None and not (needs.forces and r.forces_eV_A is None)
                and not (need_s and r.stress_eV_A3 is None))

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None):
        """Yield (j, TargetResult): store hits first, then the evaluated ones as they finish.

        Raises TargetEvaluationError with ``index`` = the failed position in ``atoms_list`` (the
        results yielded before it are already stored).
        """
        chains = default_chains(atoms_list, chains)
        needs = capabilities(self.target)
        keys = [self.key(a) for a in atoms_list]
        todo: dict[str, list[int]] = {}  # key -> positions with that key (the first one is evaluated)
        for j, (k, a) in enumerate(zip(keys, atoms_list)):
            if k in todo:
                todo[k].append(j)
                continue
            r = self.store.get_by_key(k) if self.store is not None else None
            if self._usable(r, a, needs):
                self.store_hits += 1
                yield j, r
            else:
                todo[k] = [j]
        if not todo:
            return
        first = [pos[0] for pos in todo.values()]
        batch = [atoms_list[j] for j in first]
        try:
            for m, r in stream(self.target, batch, [chains[j] for j in first]):
                j = first[m]
                if self.store is not None:
                    self.store.put(atoms_list[j], self._settings, r)
                self.target_evaluations += 1
                for jj in todo[keys[j]]:
                    yield jj, r
        except TargetEvaluationError as err:
            if err.index is not None:
                err.index = first[err.index]
            raise


def cached(target, store) -> CachedTarget:
    """Wrap ``target`` with a LabelStore (or a path to one)."""
    if store is not None and not isinstance(store, LabelStore):
        store = LabelStore(store)
    return CachedTarget(target, store)


def label_forces(store, target, atoms_list: Sequence[Any], chains: Sequence[int] | None = None) -> list[TargetResult]:
    """Forces for configurations already in ``store`` (energy-only rows gain them), warm-started
    along ``atoms_list`` per chain; configurations not yet stored are evaluated and stored too.

    The cheap alternative to ``sample(..., labels="forces")``: forces only for the states that
    will be trained on, not for every proposal.
    """
    return cached(with_forces(as_target(target)), store).evaluate(atoms_list, chains)
