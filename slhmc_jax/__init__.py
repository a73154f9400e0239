"""slhmc-jax: self-learning hybrid Monte Carlo for fine-tuning MLIPs toward a target DFT."""

from slhmc_jax import precision  # noqa: F401  (enables float64 before any array is made)

__version__ = "0.1.0"

__all__ = ["__version__", "sample", "SampleResult", "SamplerSettings"]


def __getattr__(name):
    # The sampler pulls in the whole JAX core; DFT worker processes that only need
    # slhmc_jax.targets / store must not pay for it, so it is imported on first use.
    if name in ("sample", "SampleResult", "SamplerSettings"):
        from slhmc_jax.sampler import driver as sampling

        return getattr(sampling, name)
    raise AttributeError(f"module 'slhmc_jax' has no attribute {name!r}")
