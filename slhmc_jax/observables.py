"""Structural observables of sampled frames (RDF, nearest-neighbour distances, cell metrics,
distribution distances). MCMC diagnostics live in :mod:`slhmc_jax.diagnostics`."""
