"""Hand-written compiled kernels for measured hot spots, each tested against its pure-jnp reference.

- :mod:`kernels.cell_list_cpu`: the periodic cell-list neighbour search as a Numba kernel called
  from jitted code through ``jax.pure_callback`` (CPU backend). Reference:
  ``slhmc_jax.neighbours.cell_list.build_cells_jnp``; selection: ``slhmc_jax.neighbours.cells_kernel``.
"""
