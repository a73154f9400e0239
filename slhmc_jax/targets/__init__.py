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
           "SingleEvaluationTarget", "WarmStarts", "as_target", "with_forces"]
