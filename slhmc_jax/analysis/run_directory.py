"""The run directory: the stored inputs of an analysis, with a typed writer and loader.

Layout (``format = "slhmc-run"``, ``version = 1``)::

    RUN_DIR/
      manifest.json              what is stored, written last (a directory without it is incomplete)
      reference.npz              the target reference: the SLHMC production samples (exact draws of
                                 the target distribution)
      sampler.npz                optional: sampler traces of the reference run
      arms/<arm>.npz             evaluation frames of each arm (foundation, relabel, slhmc, ...)
      arms/<arm>.training.npz    optional: target and source energies of the arm's training set
      report.json, report.md, figures/*.png      written by ``slhmc analyze RUN_DIR``

``manifest.json``::

    {"format": "slhmc-run", "version": 1,
     "temperature_K": 300.0, "ensemble": "nvt" | "npt", "pressure_GPa": null,
     "reference": "reference.npz", "sampler": "sampler.npz" | null,
     "arms": {"<arm>": {"frames": "arms/<arm>.npz", "training_energies": "arms/<arm>.training.npz" | null}},
     "metadata": {...}}            free-form JSON (config, time breakdown), copied into report.json

Frame files: ``.npz`` with ``positions`` (n_chains, n_frames, n_atoms, 3) A, ``cells``
(n_chains, n_frames, 3, 3) A, ``numbers`` (n_atoms,) int, ``pbc`` (3,) bool and optionally
``energies_eV`` (n_chains, n_frames); or any trajectory ASE reads (``.extxyz``, ``.xyz``,
``.traj``, LAMMPS dumps), taken as one chain, energies where the frames carry them.

``sampler.npz``: ``target_energies_eV`` (n_chains, n_steps), ``accepted`` (n_chains, n_steps)
bool, and optionally ``acceptance_probability`` (n_chains, n_steps), ``ml_energy_error_eV``
(n_chains, n_steps), ``move`` (n_steps,) int (0 = HMC, 1 = cell move), ``n_target_calls`` ().

Training-energy files: ``energies_target_eV`` (n,), ``energies_source_eV`` (n,), one entry per
training configuration (for :func:`slhmc_jax.analysis.observables.importance_ess`).

Paths in the manifest are relative to RUN_DIR. Every file is written to a temporary name and
renamed, so an interrupted writer never leaves a half-written file under a final name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import numpy as np

from slhmc_jax.analysis.observables import Frames

FORMAT = "slhmc-run"
VERSION = 1
MANIFEST = "manifest.json"
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class FrameSet:
    """Frames of one system, grouped in chains (sampling order along each chain).

    Attributes:
        positions: (n_chains, n_frames, n_atoms, 3) Angstrom.
        cells: (n_chains, n_frames, 3, 3) Angstrom.
        numbers: (n_atoms,) atomic numbers.
        pbc: three bools.
        energies_eV: (n_chains, n_frames) energies, or None.
    """

    positions: np.ndarray
    cells: np.ndarray
    numbers: np.ndarray
    pbc: tuple[bool, bool, bool]
    energies_eV: np.ndarray | None = None

    def __post_init__(self):
        pos = np.asarray(self.positions, np.float64)
        if pos.ndim != 4 or pos.shape[-1] != 3:
            raise ValueError(f"positions must have shape (n_chains, n_frames, n_atoms, 3); got {pos.shape}")
        cells = np.asarray(self.cells, np.float64)
        if cells.shape != pos.shape[:2] + (3, 3):
            raise ValueError(f"cells must have shape {pos.shape[:2] + (3, 3)}; got {cells.shape}")
        numbers = np.asarray(self.numbers).astype(np.int64).reshape(-1)
        if numbers.size != pos.shape[2]:
            raise ValueError(f"numbers has {numbers.size} entries but the frames have {pos.shape[2]} atoms")
        if pos.shape[0] == 0 or pos.shape[1] == 0:
            raise ValueError(f"a frame set needs at least one chain and one frame; got shape {pos.shape}")
        pbc = tuple(bool(p) for p in np.broadcast_to(np.asarray(self.pbc, bool), (3,)))
        energies = None
        if self.energies_eV is not None:
            energies = np.asarray(self.energies_eV, np.float64)
            if energies.shape != pos.shape[:2]:
                raise ValueError(f"energies_eV must have shape {pos.shape[:2]}; got {energies.shape}")
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "numbers", numbers)
        object.__setattr__(self, "pbc", pbc)
        object.__setattr__(self, "energies_eV", energies)

    @property
    def n_chains(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_frames(self) -> int:
        """Frames per chain."""
        return int(self.positions.shape[1])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[2])

    def frames(self) -> Frames:
        """All frames, chain after chain, as :class:`slhmc_jax.analysis.observables.Frames`."""
        n = self.n_chains * self.n_frames
        return Frames(self.positions.reshape(n, self.n_atoms, 3), self.cells.reshape(n, 3, 3), self.numbers, self.pbc)

    @classmethod
    def from_atoms(cls, chains) -> "FrameSet":
        """From a list of ase.Atoms (one chain) or a list of such lists (equal lengths)."""
        from ase import Atoms

        chains = list(chains)
        if chains and isinstance(chains[0], Atoms):
            chains = [chains]
        if not chains or not all(len(c) for c in chains):
            raise ValueError("no frames given")
        lengths = {len(c) for c in chains}
        if len(lengths) != 1:
            raise ValueError(f"chains must have equal lengths to form one frame set; got {sorted(lengths)}")
        first = chains[0][0]
        for c, chain in enumerate(chains):
            for f, atoms in enumerate(chain):
                if len(atoms) != len(first):
                    raise ValueError(
                        f"frames must have the same number of atoms: chain 0 frame 0 has {len(first)}, "
                        f"chain {c} frame {f} has {len(atoms)}"
                    )
                if not np.array_equal(atoms.numbers, first.numbers):
                    raise ValueError(f"chain {c} frame {f} has other atomic numbers (or atom order) than chain 0 frame 0")
        energies = _energies(chains)
        return cls(
            positions=np.stack([[a.positions for a in chain] for chain in chains]),
            cells=np.stack([[np.asarray(a.cell) for a in chain] for chain in chains]),
            numbers=first.numbers,
            pbc=tuple(bool(p) for p in first.pbc),
            energies_eV=energies,
        )


def _energies(chains):
    values = []
    for chain in chains:
        row = []
        for atoms in chain:
            e = None
            if atoms.calc is not None:
                try:
                    e = float(atoms.get_potential_energy())
                except Exception:  # noqa: BLE001 - a calculator without a stored energy
                    e = None
            if e is None and "energy" in atoms.info:
                e = float(atoms.info["energy"])
            if e is None:
                return None
            row.append(e)
        values.append(row)
    return np.asarray(values)


@dataclasses.dataclass(frozen=True)
class SamplerTrace:
    """Per-step traces of a many-chain SLHMC run.

    Attributes:
        target_energies_eV: (n_chains, n_steps) target energy of each chain's state, eV.
        accepted: (n_chains, n_steps) bool Metropolis decisions.
        acceptance_probability: (n_chains, n_steps) min(1, exp(-beta dH)), or None.
        ml_energy_error_eV: (n_chains, n_steps) ML-trajectory energy error, eV, or None.
        move: (n_steps,) int, 0 = HMC move, 1 = cell move, or None (all HMC).
        n_target_calls: target evaluations spent (warm-up included), or None.
    """

    target_energies_eV: np.ndarray
    accepted: np.ndarray
    acceptance_probability: np.ndarray | None = None
    ml_energy_error_eV: np.ndarray | None = None
    move: np.ndarray | None = None
    n_target_calls: int | None = None

    def __post_init__(self):
        e = np.asarray(self.target_energies_eV, np.float64)
        if e.ndim != 2:
            raise ValueError(f"target_energies_eV must have shape (n_chains, n_steps); got {e.shape}")
        acc = np.asarray(self.accepted)
        if acc.shape != e.shape:
            raise ValueError(f"accepted must have shape {e.shape}; got {acc.shape}")
        object.__setattr__(self, "target_energies_eV", e)
        object.__setattr__(self, "accepted", acc.astype(bool))
        for name in ("acceptance_probability", "ml_energy_error_eV"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, np.float64)
                if v.shape != e.shape:
                    raise ValueError(f"{name} must have shape {e.shape}; got {v.shape}")
                object.__setattr__(self, name, v)
        if self.move is not None:
            move = np.asarray(self.move).astype(np.int64).reshape(-1)
            if move.size != e.shape[1]:
                raise ValueError(f"move must have {e.shape[1]} entries (one per step); got {move.size}")
            object.__setattr__(self, "move", move)
        if self.n_target_calls is not None:
            object.__setattr__(self, "n_target_calls", int(self.n_target_calls))


@dataclasses.dataclass(frozen=True)
class TrainingEnergies:
    """Target and source energies (eV) of one training set, one entry per configuration."""

    energies_target_eV: np.ndarray
    energies_source_eV: np.ndarray

    def __post_init__(self):
        t = np.asarray(self.energies_target_eV, np.float64).reshape(-1)
        s = np.asarray(self.energies_source_eV, np.float64).reshape(-1)
        if t.shape != s.shape:
            raise ValueError(f"energies_target_eV has {t.size} entries, energies_source_eV {s.size}")
        object.__setattr__(self, "energies_target_eV", t)
        object.__setattr__(self, "energies_source_eV", s)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm's evaluation frames (and, optionally, its training set's energies)."""

    name: str
    frames: FrameSet
    training: TrainingEnergies | None = None

    def __post_init__(self):
        if not _ARM_NAME.match(self.name):
            raise ValueError(f"arm name {self.name!r} must be letters, digits, '_', '-' or '.' (it names files)")


@dataclasses.dataclass(frozen=True)
class RunData:
    """Everything an analysis reads: the target reference, the arms, the sampler traces.

    Attributes:
        reference: the target reference frames (SLHMC production samples).
        arms: the arms compared with it (unique names).
        sampler: traces of the reference run, or None.
        temperature_K: sampling temperature, K, or None.
        ensemble: "nvt" or "npt".
        pressure_GPa: NPT pressure, GPa, or None.
        metadata: JSON-serialisable extras (copied into report.json).
    """

    reference: FrameSet
    arms: tuple[Arm, ...] = ()
    sampler: SamplerTrace | None = None
    temperature_K: float | None = None
    ensemble: str = "nvt"
    pressure_GPa: float | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "arms", tuple(self.arms))
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique; got {names}")
        if self.ensemble not in ("nvt", "npt"):
            raise ValueError(f"ensemble must be 'nvt' or 'npt'; got {self.ensemble!r}")
        for arm in self.arms:
            if arm.frames.n_atoms != self.reference.n_atoms or not np.array_equal(arm.frames.numbers, self.reference.numbers):
                raise ValueError(
                    f"arm {arm.name!r} has {arm.frames.n_atoms} atoms, the reference {self.reference.n_atoms}: "
                    "an arm must hold the reference's atoms in the same order"
                )
            if arm.frames.pbc != self.reference.pbc:
                raise ValueError(f"arm {arm.name!r} has pbc={list(arm.frames.pbc)}, the reference {list(self.reference.pbc)}")


# ----------------------------------------------------------------------------------------
# the adapter from the sampler's result


def reference_from_sample(result) -> tuple[FrameSet, SamplerTrace]:
    """The target reference and sampler traces of a :class:`slhmc_jax.SampleResult`.

    The only place that knows the SampleResult's fields.
    """
    d = result.diagnostics
    frames = FrameSet(np.asarray(result.positions), np.asarray(result.cells), np.asarray(result.atomic_numbers),
                      tuple(bool(p) for p in result.pbc), np.asarray(result.target_energies))
    trace = SamplerTrace(
        target_energies_eV=np.asarray(result.target_energies),
        accepted=np.asarray(result.accepted, bool),
        acceptance_probability=d.acceptance_probability,
        ml_energy_error_eV=d.ml_energy_error_eV,
        move=d.move,
        n_target_calls=d.n_target_calls,
    )
    return frames, trace


# ----------------------------------------------------------------------------------------
# files


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_frames(path, frames: FrameSet) -> Path:
    """Write a frame set as ``.npz`` (the layout of the module docstring)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"frame sets are written as .npz; got {path.name}")
    arrays = {"positions": frames.positions, "cells": frames.cells, "numbers": frames.numbers, "pbc": np.asarray(frames.pbc)}
    if frames.energies_eV is not None:
        arrays["energies_eV"] = frames.energies_eV
    _atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))
    return path


def read_frames(path) -> FrameSet:
    """Read a frame set: ``.npz`` of this layout, or any trajectory ASE reads (one chain)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"frame file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as data:
            missing = [k for k in ("positions", "cells", "numbers", "pbc") if k not in data.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing} (have {sorted(data.files)})")
            return FrameSet(
                data["positions"], data["cells"], data["numbers"], tuple(data["pbc"].tolist()),
                data["energies_eV"] if "energies_eV" in data.files else None,
            )
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=":")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise ValueError(f"cannot read frames from {path}: {err}") from None
    if not atoms:
        raise ValueError(f"{path} holds no frames")
    return FrameSet.from_atoms(atoms)


def _write_npz(path: Path, arrays: dict) -> None:
    _atomic_write(path, lambda fh: np.savez_compressed(fh, **{k: v for k, v in arrays.items() if v is not None}))


def write_run_directory(path, run: RunData) -> Path:
    """Write ``run`` into ``path`` (created if needed); the manifest is written last."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    write_frames(root / "reference.npz", run.reference)
    arms = {}
    for arm in run.arms:
        entry = {"frames": f"arms/{arm.name}.npz", "training_energies": None}
        write_frames(root / entry["frames"], arm.frames)
        if arm.training is not None:
            entry["training_energies"] = f"arms/{arm.name}.training.npz"
            _write_npz(
                root / entry["training_energies"],
                {"energies_target_eV": arm.training.energies_target_eV, "energies_source_eV": arm.training.energies_source_eV},
            )
        arms[arm.name] = entry
    sampler = None
    if run.sampler is not None:
        sampler = "sampler.npz"
        t = run.sampler
        _write_npz(
            root / sampler,
            {
                "target_energies_eV": t.target_energies_eV,
                "accepted": t.accepted,
                "acceptance_probability": t.acceptance_probability,
                "ml_energy_error_eV": t.ml_energy_error_eV,
                "move": t.move,
                "n_target_calls": None if t.n_target_calls is None else np.asarray(t.n_target_calls),
            },
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "temperature_K": run.temperature_K,
        "ensemble": run.ensemble,
        "pressure_GPa": run.pressure_GPa,
        "reference": "reference.npz",
        "sampler": sampler,
        "arms": arms,
        "metadata": run.metadata,
    }
    text = json.dumps(manifest, indent=2).encode()
    _atomic_write(root / MANIFEST, lambda fh: fh.write(text))
    return root


def read_run_directory(path) -> RunData:
    """Load a run directory written by :func:`write_run_directory` (or by the workflow)."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"run directory {str(root)!r} does not exist")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{root} has no {MANIFEST}: not a run directory, or its writer has not finished")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{manifest_path} is not valid JSON: {err}") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{manifest_path}: version {manifest.get('version')!r} is not supported (this reader: {VERSION})")
    if "reference" not in manifest:
        raise ValueError(f"{manifest_path} names no reference frames")
    reference = read_frames(root / manifest["reference"])
    arms = []
    for name, entry in (manifest.get("arms") or {}).items():
        if not isinstance(entry, dict) or "frames" not in entry:
            raise ValueError(f"{manifest_path}: arm {name!r} must be an object with a 'frames' path")
        training = None
        if entry.get("training_energies"):
            with np.load(root / entry["training_energies"]) as data:
                training = TrainingEnergies(data["energies_target_eV"], data["energies_source_eV"])
        arms.append(Arm(name, read_frames(root / entry["frames"]), training))
    sampler = None
    if manifest.get("sampler"):
        with np.load(root / manifest["sampler"]) as data:
            get = lambda k: data[k] if k in data.files else None  # noqa: E731
            n_calls = get("n_target_calls")
            sampler = SamplerTrace(
                target_energies_eV=data["target_energies_eV"],
                accepted=data["accepted"],
                acceptance_probability=get("acceptance_probability"),
                ml_energy_error_eV=get("ml_energy_error_eV"),
                move=get("move"),
                n_target_calls=None if n_calls is None else int(n_calls),
            )
    return RunData(
        reference=reference,
        arms=tuple(arms),
        sampler=sampler,
        temperature_K=manifest.get("temperature_K"),
        ensemble=manifest.get("ensemble", "nvt"),
        pressure_GPa=manifest.get("pressure_GPa"),
        metadata=manifest.get("metadata") or {},
    )
