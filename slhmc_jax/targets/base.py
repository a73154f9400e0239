"""The Target protocol: the judge of an SLHMC chain (any energy model the user trusts).

A target takes a batch of configurations (``ase.Atoms``) and returns their energies in eV.
``evaluate`` returns the full results (energy, forces, stress where the method has them).
Impure and slow by nature (DFT); it lives at the edge of the package.

Three kinds of object are accepted wherever a target is
(:func:`slhmc_jax.targets.stack.as_target` turns each into a :class:`Target`, so retries, the
label store and the failure policy treat them alike):

- a :class:`Target` (``PySCFTarget``, ``ASETarget``, ``DispatchedTarget``, or your own);
- any ASE calculator (EMT, VASP, CP2K, GPAW, ...), as an :class:`~slhmc_jax.targets.ASETarget`;
- a plain callable ``f(list of Atoms) -> energies (eV)``, as a :class:`CallableTarget`.

Warm starts (the declared protocol): a target built from single evaluations
(:class:`SingleEvaluationTarget`) defines ``evaluate_one(atoms, warm) -> (TargetResult, warm')``,
a pure function of its arguments: ``warm`` is the state the method may start from (PySCF: the
occupied orbitals of the chain's previous configuration) and ``warm'`` the state it leaves.
Whoever runs a batch keeps those states in a :class:`WarmStarts`, keyed by chain, so a
configuration's result never depends on which other chains were in its batch or in what order
they ran.

Optional capabilities (forces, stress, warm starts, streaming, single evaluations, a species table,
a periodicity) are read in one place, :func:`capabilities`, as a typed :class:`Capabilities`;
everything else (the label store, dispatch, the sampler's checks) asks it.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TargetResult:
    """One labelled configuration.

    Attributes:
        energy_eV: total energy, eV.
        forces_eV_A: (n_atoms, 3) eV/A, or None where the method has no gradients.
        stress_eV_A3: (6,) Voigt (xx, yy, zz, yz, xz, xy), ASE sign convention, eV/A^3, or None.
        info: method details worth keeping (SCF cycles, wall time, settings hash, ...).
    """

    energy_eV: float
    forces_eV_A: np.ndarray | None = None
    stress_eV_A3: np.ndarray | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class TargetEvaluationError(RuntimeError):
    """A target could not produce a trustworthy energy (SCF not converged, NaN, crash).

    Attributes:
        index: position of the failed configuration in the batch (or None).
        settings: the method settings that failed, for the error report.
    """

    def __init__(self, message: str, index: int | None = None, settings: dict | None = None):
        super().__init__(message)
        self.index = index
        self.settings = settings or {}


@runtime_checkable
class Target(Protocol):
    """A batch judge: energies (eV) and full results of lists of ase.Atoms.

    Optional, read only through :func:`capabilities`: ``evaluate_streaming(atoms_list, chains)``
    yielding (j, TargetResult) as each finishes; ``evaluate_one(atoms, warm)`` (see
    :class:`SingleEvaluationTarget`); ``compute_stress``; ``warm_start``; ``with_forces()``;
    ``atomic_numbers`` (a species table); ``periodic``; or a ``capabilities`` attribute holding
    a :class:`Capabilities` that declares all of them at once.

    Attributes:
        compute_forces: whether results carry forces.
    """

    compute_forces: bool

    def settings(self) -> dict:
        """Everything that fixes the computed quantity (the label-store key includes it)."""
        ...

    def evaluate(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None) -> list[TargetResult]:
        """Results in input order; ``chains[j]`` names the chain of configuration j (warm starts).
        Raises TargetEvaluationError (``index`` = the failed position) when one fails."""
        ...

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a target declares it can do beyond ``settings`` / ``evaluate`` / ``__call__``.

    Attributes:
        forces: results carry forces (eV/A).
        stress: results of fully periodic cells carry stress (eV/A^3).
        warm_starts: a chain's configuration starts from the state its previous one left
            (``evaluate_one``'s ``warm`` argument, kept per chain by whoever runs the batch).
        streaming: ``evaluate_streaming`` yields results as they finish.
        single_evaluations: ``evaluate_one(atoms, warm) -> (TargetResult, warm')`` exists, so a
            batch can be split into one task per configuration (:mod:`slhmc_jax.targets.dispatch`).
        forces_on_request: ``with_forces()`` gives a version computing forces (True when
            ``forces`` already is).
        species: the atomic numbers it can evaluate, or None: any element.
        periodic: True, fully periodic cells only; False, molecules only; None, it follows each
            configuration's pbc.
    """

    forces: bool = False
    stress: bool = False
    warm_starts: bool = False
    streaming: bool = False
    single_evaluations: bool = False
    forces_on_request: bool = False
    species: tuple[int, ...] | None = None
    periodic: bool | None = None


def capabilities(target) -> Capabilities:
    """The :class:`Capabilities` of ``target``: the one place optional capabilities are read.

    A ``capabilities`` attribute holding a :class:`Capabilities` (every wrapper of
    :mod:`slhmc_jax.targets.stack` has one) is taken as it is; otherwise they are read from the
    duck-typed attributes ``compute_forces``, ``compute_stress``, ``warm_start`` (default True
    where ``evaluate_one`` exists), ``evaluate_streaming``, ``evaluate_one``, ``with_forces``,
    ``atomic_numbers`` and ``periodic``.
    """
    declared = getattr(target, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    forces = bool(getattr(target, "compute_forces", False))
    single = callable(getattr(target, "evaluate_one", None))
    species = getattr(target, "atomic_numbers", None)
    periodic = getattr(target, "periodic", None)
    return Capabilities(
        forces=forces, stress=bool(getattr(target, "compute_stress", False)),
        warm_starts=single and bool(getattr(target, "warm_start", True)),
        streaming=callable(getattr(target, "evaluate_streaming", None)), single_evaluations=single,
        forces_on_request=forces or callable(getattr(target, "with_forces", None)),
        species=None if species is None else tuple(int(z) for z in species),
        periodic=None if periodic is None else bool(periodic))


class WarmStarts:
    """Per-chain warm-start states: the state a chain's last configuration left, offered to the
    chain's next configuration when it has the same atoms (same atomic numbers in the same order).

    Warm states belong to the process that runs the batches: a pickled (or copied-to-a-worker)
    WarmStarts starts empty.
    """

    def __init__(self):
        self._states: dict[int, tuple[tuple[int, ...], Any]] = {}

    def get(self, chain: int, atoms) -> Any:
        """The warm state for ``atoms`` as the next configuration of ``chain``, or None."""
        numbers, state = self._states.get(int(chain), (None, None))
        return state if numbers == tuple(atoms.get_atomic_numbers()) else None

    def put(self, chain: int, atoms, state) -> None:
        self._states[int(chain)] = (tuple(atoms.get_atomic_numbers()), state)

    def __getstate__(self):
        return {"_states": {}}

    def __len__(self) -> int:
        return len(self._states)


def default_chains(atoms_list: Sequence[Any], chains: Sequence[int] | None) -> list[int]:
    """``chains`` as a list (default 0..n-1: configuration j belongs to chain j)."""
    chains = list(range(len(atoms_list))) if chains is None else [int(c) for c in chains]
    if len(chains) != len(atoms_list):
        raise ValueError(f"{len(chains)} chain ids for {len(atoms_list)} configurations")
    return chains


def collect(pairs: Iterable[tuple[int, TargetResult]], n: int) -> list[TargetResult]:
    """The results of (j, result) pairs (any order) as a list in input order, for a batch of ``n``."""
    results: list[TargetResult | None] = [None] * n
    for j, r in pairs:
        results[j] = r
    return results  # type: ignore[return-value]


def energies_eV(results: Sequence[TargetResult]) -> np.ndarray:
    """(n,) float64 energies in eV of a list of results."""
    return np.array([r.energy_eV for r in results], dtype=np.float64)


class StreamingTarget:
    """A Target whose ``evaluate`` and ``__call__`` are its ``evaluate_streaming``, collected.

    Subclasses define ``evaluate_streaming(atoms_list, chains) -> Iterator[(j, TargetResult)]``
    and ``settings()``.
    """

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None
                           ) -> Iterator[tuple[int, TargetResult]]:  # pragma: no cover - protocol
        raise NotImplementedError

    def evaluate(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None) -> list[TargetResult]:
        """Results in input order (see :meth:`Target.evaluate`)."""
        return collect(self.evaluate_streaming(atoms_list, chains), len(atoms_list))

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray:
        """(n,) energies in eV."""
        return energies_eV(self.evaluate(atoms_list))


class SingleEvaluationTarget(StreamingTarget):
    """A Target made of single evaluations ``evaluate_one(atoms, warm) -> (TargetResult, warm')``.

    Batches run one configuration after the other in this process, warm-started per chain
    (``warm_start`` attribute, default True). Subclasses define ``evaluate_one``, ``settings``
    and a ``compute_forces`` attribute.
    """

    warm_start: bool = True
    compute_forces: bool = False

    @property
    def warm_starts(self) -> WarmStarts:
        """This target's per-chain warm-start states (created on first use)."""
        if "_warm_starts" not in self.__dict__:
            self.__dict__["_warm_starts"] = WarmStarts()
        return self.__dict__["_warm_starts"]

    def evaluate_one(self, atoms, warm=None) -> tuple[TargetResult, Any]:  # pragma: no cover - protocol
        raise NotImplementedError

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None
                           ) -> Iterator[tuple[int, TargetResult]]:
        """Yield (j, TargetResult) as each configuration finishes; ``chains[j]`` is its chain."""
        for j, (atoms, chain) in enumerate(zip(atoms_list, default_chains(atoms_list, chains))):
            warm = self.warm_starts.get(chain, atoms) if self.warm_start else None
            try:
                result, state = self.evaluate_one(atoms, warm)
            except TargetEvaluationError as err:
                err.index = j
                raise
            self.warm_starts.put(chain, atoms, state)
            yield j, result

    def _copy(self, compute_forces: bool):
        # a copy shares nothing mutable with its original: its warm-start states start empty
        other = copy.copy(self)
        other.__dict__.pop("_warm_starts", None)
        other.compute_forces = compute_forces
        return other

    def with_forces(self):
        """A copy of this target that also computes forces (its own, empty warm-start states)."""
        return self._copy(compute_forces=True)

    def without_forces(self):
        """A copy of this target that computes energies only (its own, empty warm-start states)."""
        return self._copy(compute_forces=False)


class CallableTarget(SingleEvaluationTarget):
    """A plain function ``fn(list of ase.Atoms) -> energies (eV)`` as a Target (energies only).

    A batch is one call of ``fn``; a single evaluation calls it on a list of one. Any exception
    it raises, and a non-finite or missing energy, becomes a TargetEvaluationError. Its settings
    (and so its label-store keys) are the function's module and qualified name: functions that
    share a store need distinct names.
    """

    warm_start = False

    def __init__(self, fn: Callable[[list], Sequence[float]]):
        self.fn = fn

    def settings(self) -> dict:
        fn = self.fn
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__  # an instance: its class
        return {"method": "callable", "function": f"{getattr(fn, '__module__', None) or type(fn).__module__}.{name}"}

    def _energies(self, atoms_list) -> np.ndarray:
        try:
            e = np.asarray(self.fn(list(atoms_list)), np.float64).reshape(-1)
        except TargetEvaluationError:
            raise
        except Exception as err:  # the user's function: any failure is a failed evaluation
            raise TargetEvaluationError(f"target function {self.settings()['function']} failed: {err!r}",
                                        settings=self.settings()) from err
        if e.shape != (len(atoms_list),):
            raise ValueError(f"target function returned {e.size} energies for {len(atoms_list)} configurations")
        bad = np.flatnonzero(~np.isfinite(e))
        if bad.size:
            raise TargetEvaluationError(f"target function returned a non-finite energy {e[bad[0]]}", index=int(bad[0]),
                                        settings=self.settings())
        return e

    def evaluate_one(self, atoms, warm=None) -> tuple[TargetResult, None]:
        return TargetResult(float(self._energies([atoms])[0])), None

    def evaluate_streaming(self, atoms_list, chains=None):
        default_chains(atoms_list, chains)
        yield from enumerate(TargetResult(float(e)) for e in self._energies(atoms_list))

    def with_forces(self):
        raise ValueError("a plain target function gives energies only: labels='forces' needs a Target that "
                         "computes forces (PySCFTarget, ASETarget or an ASE calculator)")


def stream(target: Target, atoms_list: Sequence[Any], chains: Sequence[int] | None = None
           ) -> Iterator[tuple[int, TargetResult]]:
    """(j, result) pairs of a batch, as they finish where the target streams, else in order."""
    if capabilities(target).streaming:
        yield from target.evaluate_streaming(atoms_list, chains)
    else:
        yield from enumerate(target.evaluate(atoms_list, chains))


def declared_species(target) -> tuple[int, ...] | None:
    """The atomic numbers a target declares it can evaluate (``capabilities(target).species``,
    e.g. :class:`PotentialTarget`'s species table), or None: any element."""
    return capabilities(target).species


def declared_periodic(target) -> bool | None:
    """What a target declares about periodicity (``capabilities(target).periodic``): True, it
    evaluates fully periodic cells only; False, molecules (no periodic direction) only; None, it
    follows each configuration's pbc (PySCFTarget without periodic-only settings, ASE calculators,
    plain functions)."""
    return capabilities(target).periodic


def check_evaluable(target, atoms, role: str = "target") -> None:
    """ValueError, before anything runs, when a target's declared species or periodicity exclude
    ``atoms`` (what it cannot say is found by its first evaluation instead)."""
    from ase.data import chemical_symbols

    declared = capabilities(target)
    table = declared.species
    if table is not None:
        missing = sorted({int(z) for z in atoms.numbers} - set(table))
        if missing:
            raise ValueError(f"the {role} cannot evaluate this system: element(s) "
                             f"{[chemical_symbols[z] for z in missing]} are not in its species table "
                             f"{[chemical_symbols[z] for z in table]}")
    periodic = declared.periodic
    pbc = [bool(v) for v in atoms.pbc]
    if periodic is not None and periodic != all(pbc) or (periodic is False and any(pbc)):
        raise ValueError(f"the {role} evaluates {'periodic cells' if periodic else 'molecules'} only; "
                         f"the system has pbc={pbc}")


def with_forces(target: Target) -> Target:
    """``target`` computing forces too (itself if it already does)."""
    declared = capabilities(target)
    if declared.forces:
        return target
    if not declared.forces_on_request:
        raise ValueError(f"{type(target).__name__} cannot be asked for forces (no with_forces method)")
    return target.with_forces()

