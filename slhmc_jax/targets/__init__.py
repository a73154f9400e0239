"""Targets: the energy that accepts or rejects every SLHMC proposal (PySCF DFT, ASE calculators)."""

from slhmc_jax.targets.base import Target, TargetEvaluationError, TargetResult

__all__ = ["Target", "TargetResult", "TargetEvaluationError"]
