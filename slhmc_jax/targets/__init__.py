"""Targets: the energy that accepts or rejects every SLHMC proposal (PySCF DFT, ASE calculators)."""

from slhmc_jax.targets.ase_target import ASETarget
from slhmc_jax.targets.base import (
    CallableTarget,
    SingleEvaluationTarget,
    Target,
    TargetEvaluationError,
    TargetResult,
    WarmStarts,
    as_target,
    with_forces,
)
from slhmc_jax.targets.pyscf_target import PySCFTarget

__all__ = ["Target", "TargetResult", "TargetEvaluationError", "PySCFTarget", "ASETarget", "CallableTarget",
           "PotentialTarget", "SingleEvaluationTarget", "WarmStarts", "as_target", "with_forces"]


def __getattr__(name):
    # PotentialTarget pulls in the JAX core; DFT worker processes importing the targets must not pay for it
    if name == "PotentialTarget":
        from slhmc_jax.targets.potential_target import PotentialTarget

        return PotentialTarget
    raise AttributeError(f"module 'slhmc_jax.targets' has no attribute {name!r}")
