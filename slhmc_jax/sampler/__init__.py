"""Propose: the SLHMC kernels, integrators, adaptation, checkpoints and the driver.

One SLHMC step, by module: :mod:`~slhmc_jax.sampler.kernels` ``propose`` (the ML trajectory,
:mod:`~slhmc_jax.sampler.integrators`) -> :mod:`slhmc_jax.targets.judge` (the target's energies) ->
``kernels.accept`` (one Metropolis rule) -> the driver records it (:mod:`~slhmc_jax.sampler.driver`,
``Driver.step``; the run's counters: :mod:`~slhmc_jax.sampler.counters`). A run is configured by
:mod:`~slhmc_jax.sampler.settings`, checkpointed by :mod:`~slhmc_jax.sampler.checkpoint` and returns
:mod:`~slhmc_jax.sampler.result` (a :mod:`~slhmc_jax.sampler.trajectory` with diagnostics).
"""

# The driver pulls in the whole JAX core; imported on first use (DFT worker processes never need it).
_LAZY = {"sample": "slhmc_jax.sampler.driver", "SampleResult": "slhmc_jax.sampler.result",
         "SamplerSettings": "slhmc_jax.sampler.settings"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slhmc_jax.sampler' has no attribute {name!r}")
