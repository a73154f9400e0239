"""Process-wide JAX settings the package relies on.

Energies that enter a Metropolis test must be float64, so 64-bit types are enabled when
slhmc_jax is imported. Models may still run in float32 by casting their parameters and inputs.
"""

import jax

jax.config.update("jax_enable_x64", True)
