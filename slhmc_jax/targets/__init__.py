"""Targets: the energy that accepts or rejects every SLHMC proposal (PySCF DFT, ASE calculators)."""

from slhmc_jax.targets.ase_target import ASETarget
from slhmc_jax.targets.base import Target, TargetEvaluationError, TargetResult
from slhmc_jax.targets.pyscf_target import PySCFTarget

__all__ = ["Target", "TargetResult", "TargetEvaluationError", "PySCFTarget", "ASETarget"]
