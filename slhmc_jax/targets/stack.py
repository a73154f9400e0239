"""Making and stacking targets: ``as_target`` adapts what the user passes, wrappers add one job each.

Following ``target`` from :func:`slhmc_jax.sample` leads through this stack, outermost first::

    Judge (targets.judge: retries, failure policy)
      -> CachedTarget (targets.store: label store, store_hits / target_evaluations)
        -> TimedTarget (here: seconds spent, e.g. the workflow's "target_dft" timing)
          -> DispatchedTarget (targets.dispatch: one task per configuration on an executor)
            -> PySCFTarget / ASETarget / CallableTarget / PotentialTarget (the method itself)

Every wrapper is a :class:`TargetWrapper`: it holds the inner target as ``.target``, forwards
``settings()`` and the inner :class:`~slhmc_jax.targets.base.Capabilities`, turns
``with_forces()`` into the same wrapper around the inner target's forces version, and defines
only ``evaluate_streaming`` (``evaluate`` and ``__call__`` follow from it).
:func:`energy_only` is the converse of ``with_forces`` for targets whose forces cost extra.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Iterator, Sequence

from slhmc_jax.targets.ase_target import ASETarget
from slhmc_jax.targets.base import (
    CallableTarget,
    Capabilities,
    SingleEvaluationTarget,
    StreamingTarget,
    Target,
    TargetResult,
    capabilities,
    stream,
    with_forces,
)


def is_ase_calculator(obj) -> bool:
    """Whether ``obj`` looks like an ASE calculator (``get_potential_energy`` and ``calculate``)."""
    return hasattr(obj, "get_potential_energy") and hasattr(obj, "calculate")


def as_target(obj) -> Target:
    """A :class:`Target`, an ASE calculator or a callable on a list of Atoms, as a Target."""
    if isinstance(obj, Target):
        return obj
    if is_ase_calculator(obj):
        return ASETarget(obj, compute_forces=False)
    if callable(obj):
        return CallableTarget(obj)
    raise TypeError(f"target must be a slhmc_jax Target, an ASE calculator or a callable on a list of Atoms; "
                    f"got {type(obj).__name__}")


class TargetWrapper(StreamingTarget):
    """A Target around another one: the base of every wrapper in the stack.

    Subclasses define ``evaluate_streaming`` (and, when a copy must not share some state of the
    original, ``rewrap``).

    Args:
        target: anything :func:`as_target` accepts.

    Attributes:
        target: the inner Target.
    """

    def __init__(self, target):
        self.target = as_target(target)

    def settings(self) -> dict:
        return self.target.settings()

    @property
    def capabilities(self) -> Capabilities:
        """The inner target's capabilities; a wrapper streams, and is not split into single evaluations."""
        inner = capabilities(self.target)
        return dataclasses.replace(inner, streaming=True, single_evaluations=False)

    @property
    def compute_forces(self) -> bool:
        return self.capabilities.forces

    @property
    def compute_stress(self) -> bool:
        return self.capabilities.stress

    def rewrap(self, inner: Target) -> "TargetWrapper":
        """This wrapper, with its configuration, around ``inner`` instead of ``self.target``."""
        other = copy.copy(self)
        other.target = inner
        return other

    def with_forces(self) -> "TargetWrapper":
        """The same wrapper around the inner target's forces version (itself if it computes forces)."""
        return self if self.compute_forces else self.rewrap(with_forces(self.target))

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None
                           ) -> Iterator[tuple[int, TargetResult]]:
        """Yield (j, TargetResult) as the inner target gives them (a wrapper that adds nothing)."""
        yield from stream(self.target, atoms_list, chains)


class TimedTarget(TargetWrapper):
    """A Target whose batches are timed: ``add_seconds(wall-clock seconds)`` after each batch
    (``time.perf_counter``; also when a batch fails or its stream is abandoned).

    Args:
        target: anything :func:`as_target` accepts.
        add_seconds: called once per batch with its seconds, e.g.
            ``functools.partial(timings.add, "target_dft")``.
    """

    def __init__(self, target, add_seconds: Callable[[float], None]):
        super().__init__(target)
        self.add_seconds = add_seconds

    def evaluate_streaming(self, atoms_list: Sequence[Any], chains: Sequence[int] | None = None
                           ) -> Iterator[tuple[int, TargetResult]]:
        t0 = time.perf_counter()
        try:
            yield from stream(self.target, atoms_list, chains)
        finally:
            self.add_seconds(time.perf_counter() - t0)


def timed(target, add_seconds: Callable[[float], None]) -> TimedTarget:
    """``target`` timed into ``add_seconds`` (see :class:`TimedTarget`)."""
    return TimedTarget(target, add_seconds)


def energy_only(target):
    """``target`` computing energies only (what SLHMC's judge needs), where forces cost extra.

    A :class:`~slhmc_jax.targets.base.SingleEvaluationTarget` computing forces (PySCFTarget,
    ASETarget) becomes its ``without_forces()`` copy (with its own, empty warm-start states);
    any other target is returned as it is (PotentialTarget's forces cost nothing extra).
    """
    if isinstance(target, SingleEvaluationTarget) and capabilities(target).forces:
        return target.without_forces()
    return target
