"""Propose: the SLHMC kernels, integrators, adaptation, checkpoints and the driver.

One SLHMC step, by module: :mod:`~slhmc_jax.sampler.kernels` ``propose`` (the ML trajectory,
:mod:`~slhmc_jax.sampler.integrators`) -> :mod:`slhmc_jax.targets.judge` (the target's energies) ->
``kernels.accept`` (one Metropolis rule) -> the driver records it (:mod:`~slhmc_jax.sampler.driver`).
"""


def __getattr__(name):
    # The driver pulls in the whole JAX core; imported on first use (DFT worker processes never need it).
    if name in ("sample", "SampleResult", "SamplerSettings"):
        from slhmc_jax.sampler import driver

        return getattr(driver, name)
    raise AttributeError(f"module 'slhmc_jax.sampler' has no attribute {name!r}")
