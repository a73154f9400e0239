"""Targets: the energy that accepts or rejects every SLHMC proposal (PySCF DFT, ASE calculators).

``base`` (the protocol and its typed capabilities), ``stack`` (``as_target`` and the wrappers),
``pyscf_target`` / ``ase_target`` / ``potential_target`` (methods), ``store`` (label store),
``dispatch`` (executors), ``judge`` (retries and the failure policy).
"""

from slhmc_jax.targets.ase_target import ASETarget
from slhmc_jax.targets.base import (
    CallableTarget,
    Capabilities,
    SingleEvaluationTarget,
    Target,
    TargetEvaluationError,
    TargetResult,
    WarmStarts,
    capabilities,
    with_forces,
)
from slhmc_jax.targets.pyscf_target import PySCFTarget
from slhmc_jax.targets.stack import TargetWrapper, TimedTarget, as_target, energy_only, timed

__all__ = ["Target", "TargetResult", "TargetEvaluationError", "Capabilities", "capabilities", "PySCFTarget",
           "ASETarget", "CallableTarget", "PotentialTarget", "SingleEvaluationTarget", "WarmStarts", "as_target",
           "with_forces", "TargetWrapper", "TimedTarget", "timed", "energy_only"]


def __getattr__(name):
    # PotentialTarget pulls in the JAX core; DFT worker processes importing the targets must not pay for it
    if name == "PotentialTarget":
        from slhmc_jax.targets.potential_target import PotentialTarget

        return PotentialTarget
    raise AttributeError(f"module 'slhmc_jax.targets' has no attribute {name!r}")
