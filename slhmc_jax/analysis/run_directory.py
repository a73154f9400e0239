"""The run directory: the stored inputs of an analysis, with a typed writer and loader.

Layout (``format = "slhmc-run"``, ``version = 1``)::

    RUN_DIR/
      manifest.json              what is stored, written last (a directory without it is incomplete)
      reference.npz              the target reference: SLHMC production samples (exact draws of
                                 the target distribution; the workflow's own reference run)
      sampler.npz                optional: sampler traces of the reference run
      arms/<arm>.npz             evaluation frames of each arm (foundation, relabel, slhmc, ...),
                                 its replicate 0
      arms/<arm>.replicate_<i>.npz   optional: the evaluation frames of replicate i >= 1
      arms/<arm>.training.npz    optional: target and source energies of the arm's training set
      report.json, report.md, figures/*.png      written by ``slhmc analyze RUN_DIR``

``manifest.json``::

    {"format": "slhmc-run", "version": 1,
     "temperature_K": 300.0, "ensemble": "nvt" | "npt", "pressure_GPa": null,
     "reference": "reference.npz", "sampler": "sampler.npz" | null,
     "arms": {"<arm>": {"frames": "arms/<arm>.npz", "replicates": ["arms/<arm>.npz", ...],
                        "training_energies": "arms/<arm>.training.npz" | null}},
     "metadata": {...}}            free-form JSON (config, time breakdown), copied into report.json

``replicates`` (optional; absent in directories written before it: one replicate, ``frames``)
lists every replicate's frame file, replicate 0 first (the same file as ``frames``).

Frame files: a :class:`slhmc_jax.sampler.trajectory.Trajectory` saved by its ``save``: ``.npz``
with ``positions`` (n_chains, n_frames, n_atoms, 3) A, ``cells`` (n_chains, n_frames, 3, 3) A,
``atomic_numbers`` (n_atoms,) int, ``pbc`` (3,) bool and optionally ``target_energies``,
``accepted`` and ``store_keys`` (n_chains, n_frames); the first layout's names ``numbers`` and
``energies_eV`` are read too. Or any trajectory ASE reads (``.extxyz``, ``.xyz``, ``.traj``,
LAMMPS dumps), taken as one chain, energies where the frames carry them.

``sampler.npz`` (:func:`write_trace`): ``target_energies_eV`` (n_chains, n_steps), ``accepted``
(n_chains, n_steps) bool, and optionally ``acceptance_probability`` (n_chains, n_steps),
``ml_energy_error_eV`` (n_chains, n_steps), ``move`` (n_steps,) int (0 = HMC, 1 = cell move),
``n_target_calls`` () (the target evaluations of the run), ``n_judged`` () (configurations judged:
evaluations + label-store hits, the denominator of ESS per target call).

Training-energy files: ``energies_target_eV`` (n,), ``energies_source_eV`` (n,), one entry per
training configuration (for :func:`slhmc_jax.analysis.observables.importance_ess`).

Paths in the manifest are relative to RUN_DIR. Every file is written atomically
(:mod:`slhmc_jax.files`), so an interrupted writer never leaves a half-written file under a final name.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from slhmc_jax.files import write_json, write_npz
from slhmc_jax.sampler.trajectory import Trajectory

FORMAT = "slhmc-run"
VERSION = 1
MANIFEST = "manifest.json"
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def trajectory_from_atoms(chains) -> Trajectory:
    """A :class:`Trajectory` from a list of ase.Atoms (one chain) or a list of such lists (equal lengths);
    target energies where every frame carries one (a calculator's or ``info["energy"]``), eV."""
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
    return Trajectory(
        positions=np.stack([[a.positions for a in chain] for chain in chains]),
        cells=np.stack([[np.asarray(a.cell) for a in chain] for chain in chains]),
        atomic_numbers=first.numbers,
        pbc=first.pbc,
        target_energies=_energies(chains),
    )


def join_frames(trajectories) -> Trajectory:
    """One trajectory of several runs of the same chains, each chain's frames one run after the other
    (an optional array is kept where every run has it)."""
    trajectories = list(trajectories)
    first = trajectories[0]

    def joined(name):
        parts = [getattr(t, name) for t in trajectories]
        return None if any(p is None for p in parts) else np.concatenate(parts, axis=1)

    return Trajectory(positions=joined("positions"), cells=joined("cells"), atomic_numbers=first.atomic_numbers,
                      pbc=first.pbc, target_energies=joined("target_energies"), accepted=joined("accepted"),
                      store_keys=joined("store_keys"))


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
        target_evaluations: configurations the target evaluated (warm-up included), or None.
        judged: configurations judged, target evaluations + store hits (a hit is a call an earlier
            process of the run paid), or None: the denominator of ESS per target call.
    """

    target_energies_eV: np.ndarray
    accepted: np.ndarray
    acceptance_probability: np.ndarray | None = None
    ml_energy_error_eV: np.ndarray | None = None
    move: np.ndarray | None = None
    target_evaluations: int | None = None
    judged: int | None = None

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
        for name in ("target_evaluations", "judged"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))


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
    """One arm's evaluation frames, replicate by replicate (and, optionally, its training set's energies).

    Attributes:
        name: letters, digits, '_', '-' or '.' (it names files).
        replicates: the evaluation frames of each replicate (an independent fine-tuning and
            evaluation sampling), one :class:`Trajectory` each; a single Trajectory is one replicate.
        training: target and source energies of replicate 0's training set, or None.
    """

    name: str
    replicates: tuple
    training: TrainingEnergies | None = None

    def __post_init__(self):
        if not _ARM_NAME.match(self.name):
            raise ValueError(f"arm name {self.name!r} must be letters, digits, '_', '-' or '.' (it names files)")
        reps = (self.replicates,) if isinstance(self.replicates, Trajectory) else tuple(self.replicates)
        if not reps or not all(isinstance(r, Trajectory) for r in reps):
            raise ValueError(f"arm {self.name!r}: replicates must be one or more Trajectory objects")
        first = reps[0]
        for i, r in enumerate(reps[1:], 1):
            if r.n_atoms != first.n_atoms or not np.array_equal(r.atomic_numbers, first.atomic_numbers) or \
                    not np.array_equal(r.pbc, first.pbc):
                raise ValueError(f"arm {self.name!r}: replicate {i} holds other atoms (or pbc) than replicate 0")
        object.__setattr__(self, "replicates", reps)

    @property
    def frames(self) -> Trajectory:
        """Replicate 0's evaluation frames (what a single-replicate analysis reads)."""
        return self.replicates[0]

    @property
    def n_replicates(self) -> int:
        return len(self.replicates)


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

    reference: Trajectory
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
            if arm.frames.n_atoms != self.reference.n_atoms or not np.array_equal(arm.frames.atomic_numbers,
                                                                                  self.reference.atomic_numbers):
                raise ValueError(
                    f"arm {arm.name!r} has {arm.frames.n_atoms} atoms, the reference {self.reference.n_atoms}: "
                    "an arm must hold the reference's atoms in the same order"
                )
            if not np.array_equal(arm.frames.pbc, self.reference.pbc):
                raise ValueError(f"arm {arm.name!r} has pbc={[bool(p) for p in arm.frames.pbc]}, "
                                 f"the reference {[bool(p) for p in self.reference.pbc]}")


# ----------------------------------------------------------------------------------------
# the adapter from the sampler's result


def reference_from_sample(result) -> tuple[Trajectory, SamplerTrace]:
    """The frames and sampler traces of a :class:`slhmc_jax.SampleResult` (the reference run's, or any other).

    The only place that knows the SampleResult's fields.
    """
    d = result.diagnostics
    frames = result.trajectory()
    trace = SamplerTrace(
        target_energies_eV=np.asarray(result.target_energies),
        accepted=np.asarray(result.accepted, bool),
        acceptance_probability=d.acceptance_probability,
        ml_energy_error_eV=d.ml_energy_error_eV,
        move=d.move,
        target_evaluations=result.counters.target_evaluations,
        judged=result.counters.judged,
    )
    return frames, trace


# ----------------------------------------------------------------------------------------
# files


def write_frames(path, frames: Trajectory) -> Path:
    """Write a trajectory as ``.npz`` (:meth:`Trajectory.save`, the layout of the module docstring)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"frame sets are written as .npz; got {path.name}")
    return frames.save(path)


_FIRST_LAYOUT = {"numbers": "atomic_numbers", "energies_eV": "target_energies"}  # version 1's first frame files


def read_frames(path) -> Trajectory:
    """Read a trajectory: ``.npz`` of this layout, or any trajectory ASE reads (one chain)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"frame file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            arrays = {_FIRST_LAYOUT.get(k, k): data[k] for k in data.files}
        missing = [k for k in ("positions", "cells", "atomic_numbers", "pbc") if k not in arrays]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (have {sorted(arrays)})")
        names = {f.name for f in dataclasses.fields(Trajectory)}
        return Trajectory(**{k: v for k, v in arrays.items() if k in names})
    import ase.io

    try:
        atoms = ase.io.read(str(path), index=":")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for unreadable files
        raise ValueError(f"cannot read frames from {path}: {err}") from None
    if not atoms:
        raise ValueError(f"{path} holds no frames")
    return trajectory_from_atoms(atoms)


def write_trace(path, trace: SamplerTrace) -> Path:
    """Write sampler traces as ``.npz`` (``sampler.npz``'s layout in the module docstring)."""
    arrays = {
        "target_energies_eV": trace.target_energies_eV,
        "accepted": trace.accepted,
        "acceptance_probability": trace.acceptance_probability,
        "ml_energy_error_eV": trace.ml_energy_error_eV,
        "move": trace.move,
        "n_target_calls": None if trace.target_evaluations is None else np.asarray(trace.target_evaluations),
        "n_judged": None if trace.judged is None else np.asarray(trace.judged),
    }
    return write_npz(path, **{k: v for k, v in arrays.items() if v is not None})


def read_trace(path) -> SamplerTrace:
    """Sampler traces written by :func:`write_trace`."""
    with np.load(path, allow_pickle=False) as data:
        get = lambda k: data[k] if k in data.files else None  # noqa: E731
        n_calls, n_judged = get("n_target_calls"), get("n_judged")
        return SamplerTrace(
            target_energies_eV=data["target_energies_eV"],
            accepted=data["accepted"],
            acceptance_probability=get("acceptance_probability"),
            ml_energy_error_eV=get("ml_energy_error_eV"),
            move=get("move"),
            target_evaluations=None if n_calls is None else int(n_calls),
            judged=None if n_judged is None else int(n_judged),
        )


def write_run_directory(path, run: RunData) -> Path:
    """Write ``run`` into ``path`` (created if needed); the manifest is written last."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    write_frames(root / "reference.npz", run.reference)
    arms = {}
    for arm in run.arms:
        replicates = [f"arms/{arm.name}.npz"] + [f"arms/{arm.name}.replicate_{i}.npz" for i in range(1, arm.n_replicates)]
        entry = {"frames": replicates[0], "replicates": replicates, "training_energies": None}
        for name, frames in zip(replicates, arm.replicates):
            write_frames(root / name, frames)
        if arm.training is not None:
            entry["training_energies"] = f"arms/{arm.name}.training.npz"
            write_npz(root / entry["training_energies"], energies_target_eV=arm.training.energies_target_eV,
                      energies_source_eV=arm.training.energies_source_eV)
        arms[arm.name] = entry
    sampler = None
    if run.sampler is not None:
        sampler = "sampler.npz"
        write_trace(root / sampler, run.sampler)
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
    write_json(root / MANIFEST, manifest)
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
            with np.load(root / entry["training_energies"], allow_pickle=False) as data:
                training = TrainingEnergies(data["energies_target_eV"], data["energies_source_eV"])
        replicates = entry.get("replicates") or [entry["frames"]]  # run directories before replicates: one
        arms.append(Arm(name, tuple(read_frames(root / p) for p in replicates), training))
    sampler = None
    if manifest.get("sampler"):
        sampler = read_trace(root / manifest["sampler"])
    return RunData(
        reference=reference,
        arms=tuple(arms),
        sampler=sampler,
        temperature_K=manifest.get("temperature_K"),
        ensemble=manifest.get("ensemble", "nvt"),
        pressure_GPa=manifest.get("pressure_GPa"),
        metadata=manifest.get("metadata") or {},
    )
