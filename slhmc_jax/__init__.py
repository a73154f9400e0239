"""slhmc-jax: self-learning hybrid Monte Carlo for fine-tuning MLIPs toward a target DFT."""

from slhmc_jax import _jax_config  # noqa: F401  (enables float64 before any array is made)

__version__ = "0.1.0"

from slhmc_jax.sampling import SampleResult, sample  # noqa: E402

__all__ = ["__version__", "sample", "SampleResult"]
