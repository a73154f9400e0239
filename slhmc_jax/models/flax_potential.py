"""The species table and :class:`FlaxPotential`: plug in an equivariant model by writing one flax module.

A user model is a flax ``nn.Module`` whose ``__call__`` has the signature

    __call__(species, senders, receivers, edge_vectors, edge_mask) -> node_energies

- ``species``: (n_atoms,) int32, index of each atom's element in the potential's species table.
- ``senders``, ``receivers``: (n_edges,) int32, pair (i, j); always valid atom indices (padded
  entries point at atom n_atoms - 1).
- ``edge_vectors``: (n_edges, 3) float, d = x[j] - x[i] + S @ cell, Angstrom.
- ``edge_mask``: (n_edges,) bool, True for real pairs with |d| < cutoff. Masked edges have
  |d| >= cutoff; the module must give them zero weight (a radial envelope that vanishes at the
  cutoff does this, and so does multiplying messages by ``edge_mask``).
- ``node_energies``: (n_atoms,) float, per-atom energies in eV (a scalar total is accepted too).

:class:`FlaxPotential` wraps such a module plus a cutoff and a species table into a
:class:`~slhmc_jax.models.base.Potential` (E = sum_i node_energies_i); :func:`from_flax_module`
initialises one. Models built on it (``models.mace``, ``models.nequip``) import this module, and the
registry (:mod:`slhmc_jax.models.registry`) imports them, never the other way round.
"""


from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import neighbours as nl

PyTree = Any

__all__ = ["FlaxPotential", "SpeciesTable", "from_flax_module"]


@dataclasses.dataclass(frozen=True)
class SpeciesTable:
    """Maps atomic numbers to contiguous species indices with a static lookup array.

    Args:
        atomic_numbers: the supported elements, e.g. (8, 22); index k is element atomic_numbers[k].
    """

    atomic_numbers: tuple[int, ...]

    def __post_init__(self):
        z = tuple(int(v) for v in self.atomic_numbers)
        if not z:
            raise ValueError("species table needs at least one element")
        if len(set(z)) != len(z) or min(z) < 1 or max(z) > 118:
            raise ValueError(f"species table must hold distinct atomic numbers in 1..118; got {z}")
        object.__setattr__(self, "atomic_numbers", z)

    @property
    def lookup(self) -> np.ndarray:
        """(119,) int32: lookup[Z] = species index, or -1 for elements outside the table."""
        table = np.full(119, -1, np.int32)
        table[list(self.atomic_numbers)] = np.arange(len(self.atomic_numbers), dtype=np.int32)
        return table

    def check(self, atomic_numbers) -> np.ndarray:
        """Host-side check: raises ValueError naming any element not in the table."""
        z = np.asarray(atomic_numbers)
        if z.ndim != 1 or z.dtype.kind not in "iu":
            raise ValueError(f"atomic_numbers must be a 1-d integer array; got shape {z.shape}, dtype {z.dtype}")
        unknown = sorted(set(z.tolist()) - set(self.atomic_numbers))
        if unknown:
            from ase.data import chemical_symbols

            names = [chemical_symbols[u] if 0 <= u < len(chemical_symbols) else str(u) for u in unknown]
            raise ValueError(
                f"element(s) {names} not in the species table {[chemical_symbols[t] for t in self.atomic_numbers]}"
            )
        return z

    def index(self, atomic_numbers) -> jax.Array:
        """Species indices (jit-able; assumes :meth:`check` passed on the host)."""
        return jnp.asarray(self.lookup)[atomic_numbers]


@dataclasses.dataclass(frozen=True, eq=False)
class FlaxPotential:
    """A flax module (see the module docstring for its call signature) as a Potential.

    E = sum_i node_energies_i (eV), with node energies from ``module.apply(params, ...)``.
    Compared and hashed by identity (it can be a static jit argument).

    Attributes:
        module: the flax module.
        params: its parameter pytree (from ``module.init``).
        cutoff: Angstrom; pairs at or beyond it are masked.
        atomic_numbers: species table (index k <-> element atomic_numbers[k]).
    """

    module: Any
    params: PyTree
    cutoff: float
    atomic_numbers: tuple[int, ...]

    def __post_init__(self):
        if self.cutoff is None or not float(self.cutoff) > 0:
            raise ValueError(f"FlaxPotential needs a positive cutoff in Angstrom; got {self.cutoff}")
        object.__setattr__(self, "cutoff", float(self.cutoff))
        object.__setattr__(self, "atomic_numbers", SpeciesTable(self.atomic_numbers).atomic_numbers)

    @property
    def species_table(self) -> SpeciesTable:
        return SpeciesTable(self.atomic_numbers)

    @property
    def prefers_dense_neighbours(self) -> bool:
        """True when the module reads the dense per-atom neighbour format (receiver-major
        (n_atoms, K) slots) faster than a pair list: callers then allocate that format."""
        return bool(getattr(self.module, "reads_dense_neighbours", False))

    def graph(self, positions, cell, atomic_numbers, neighbours):
        """The module inputs (species, senders, receivers, edge_vectors, edge_mask).

        Edges are flat (E,) arrays, or (n_atoms, K) when the neighbours are in the dense format
        and the module reads it (``reads_dense_neighbours``).
        """
        if neighbours is None:
            raise ValueError("FlaxPotential needs a neighbour list built with a cutoff >= potential.cutoff")
        n = positions.shape[0]
        species = self.species_table.index(atomic_numbers)
        d = nl.edge_vectors(positions, cell, neighbours)
        r2 = jnp.sum(d * d, axis=-1)
        mask = neighbours.mask & (r2 < self.cutoff**2)
        far = jnp.zeros_like(d).at[..., 0].set(10.0 * self.cutoff + 1.0)
        d = jnp.where(mask[..., None], d, far)
        senders = jnp.minimum(neighbours.senders, n - 1)
        receivers = jnp.minimum(neighbours.receivers, n - 1)
        if neighbours.is_dense and not self.prefers_dense_neighbours:
            senders, receivers, d, mask = senders.reshape(-1), receivers.reshape(-1), d.reshape(-1, 3), mask.reshape(-1)
        return species, senders, receivers, d, mask

    def node_energies(self, params, positions, cell, atomic_numbers, neighbours) -> jax.Array:
        """(n_atoms,) per-atom energies, eV."""
        out = self.module.apply(params, *self.graph(positions, cell, atomic_numbers, neighbours))
        out = jnp.asarray(out)
        if out.ndim == 0:
            return jnp.full((positions.shape[0],), out / positions.shape[0])
        return out.reshape(positions.shape[0])

    def energy(self, params, positions, cell, atomic_numbers, neighbours) -> jax.Array:
        """Total energy, eV."""
        return jnp.sum(self.node_energies(params, positions, cell, atomic_numbers, neighbours))


def _example_inputs(n_species: int, dtype):
    """A tiny 2-atom graph for ``module.init``."""
    species = jnp.arange(2, dtype=jnp.int32) % n_species
    senders = jnp.array([0, 1], jnp.int32)
    receivers = jnp.array([1, 0], jnp.int32)
    d = jnp.array([[1.0, 0.2, 0.1], [-1.0, -0.2, -0.1]], dtype)
    mask = jnp.array([True, True])
    return species, senders, receivers, d, mask


def from_flax_module(module, atomic_numbers, cutoff: float, *, key=None, dtype=jnp.float64, params=None) -> FlaxPotential:
    """Initialise ``module`` (unless ``params`` is given) and wrap it as a :class:`FlaxPotential`.

    Floating-point parameters are cast to ``dtype``.
    """
    table = SpeciesTable(tuple(atomic_numbers))
    if params is None:
        key = jax.random.PRNGKey(0) if key is None else key
        params = jax.jit(module.init)(key, *_example_inputs(len(table.atomic_numbers), dtype))
    params = jax.tree.map(lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p, params)
    return FlaxPotential(module, params, cutoff, table.atomic_numbers)


def with_species_energies(potential: FlaxPotential, leaf: str, energies_eV, what: str) -> FlaxPotential:
    """``potential`` with its per-species energy leaf ``params["params"][leaf]`` set to ``energies_eV``
    (one value per element of its species table, eV, in the parameters' dtype); ``what`` names the
    argument in the error."""
    import jax
    import jax.numpy as jnp

    params = jax.tree.map(lambda p: p, potential.params)  # a new container: the original stays as it is
    n = len(potential.atomic_numbers)
    e0 = jnp.asarray(energies_eV, params["params"][leaf].dtype)
    if e0.shape != (n,):
        raise ValueError(f"{what} needs {n} values (one per element); got shape {e0.shape}")
    params["params"][leaf] = e0
    return FlaxPotential(potential.module, params, potential.cutoff, potential.atomic_numbers)
