"""Model registry and :class:`FlaxPotential`: plug in an equivariant model by writing one flax module.

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
:class:`~slhmc_jax.models.base.Potential` (E = sum_i node_energies_i). The registry maps a name to
a builder ``builder(atomic_numbers, *, key, dtype, **hyper) -> Potential``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from slhmc_jax import neighbours as nl
from slhmc_jax.models.base import FunctionPotential, Potential

PyTree = Any

__all__ = ["FlaxPotential", "SpeciesTable", "register", "build", "available", "from_flax_module"]


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


# ----------------------------------------------------------------------------------------
# registry

_REGISTRY: dict[str, Callable[..., Potential]] = {}


def register(name: str, builder: Callable[..., Potential], *, overwrite: bool = False) -> None:
    """Register ``builder(atomic_numbers, *, key, dtype, **hyper) -> Potential`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string; got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"model {name!r} is already registered (pass overwrite=True to replace it)")
    if not callable(builder):
        raise ValueError(f"builder for {name!r} is not callable")
    _REGISTRY[name] = builder


def available() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_REGISTRY)


def build(name: str, atomic_numbers, *, key=None, dtype=jnp.float64, **hyper) -> Potential:
    """Build the registered model ``name`` for the elements ``atomic_numbers``.

    Args:
        name: a name from :func:`available`.
        atomic_numbers: the species table, e.g. (8, 22).
        key: PRNG key for parameter initialisation (default PRNGKey(0)).
        dtype: float dtype of the parameters.
        **hyper: model hyperparameters.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {available()}")
    return _REGISTRY[name](tuple(int(z) for z in atomic_numbers), key=key, dtype=dtype, **hyper)


# ----------------------------------------------------------------------------------------
# built-in models


def _build_nequip(atomic_numbers, *, key=None, dtype=jnp.float64, **hyper):
    from slhmc_jax.models import nequip

    return nequip.build(atomic_numbers, key=key, dtype=dtype, **hyper)


def _build_mace(atomic_numbers, *, key=None, dtype=jnp.float64, **hyper):
    from slhmc_jax.models import mace

    hp = dict(hyper)
    if "hyperparameters" in hp:
        hps = hp.pop("hyperparameters")
        if hp:
            raise ValueError(f"pass either hyperparameters= or keyword hyperparameters, not both; got {sorted(hp)}")
    else:
        size = hp.pop("size", "small")
        hps = dataclasses.replace(mace.mp0_hyperparameters(size, atomic_numbers=tuple(atomic_numbers)), **hp)
    return mace.build(hps, key=key, dtype=dtype)


def lennard_jones_energy(positions, cell, atomic_numbers, neighbours, *, epsilon_eV, sigma_A, cutoff_A, onset_A):
    """Lennard-Jones pair energy with a C2 switch between onset and cutoff, eV.

    E = 1/2 sum_{i != j} 4 eps [(sigma/r)^12 - (sigma/r)^6] s(r), with s = 1 below onset, 0 above the
    cutoff and the quintic smoothstep in between.
    """
    del atomic_numbers
    d = nl.edge_vectors(positions, cell, neighbours)
    r2 = jnp.sum(d * d, axis=-1)
    inside = neighbours.mask & (r2 < cutoff_A**2)
    r = jnp.sqrt(jnp.where(inside, r2, cutoff_A**2))
    sr6 = (sigma_A / r) ** 6
    t = jnp.clip((r - onset_A) / (cutoff_A - onset_A), 0.0, 1.0)
    switch = 1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2)
    return 0.5 * jnp.sum(jnp.where(inside, 4.0 * epsilon_eV * (sr6 * sr6 - sr6) * switch, 0.0))


def _build_lennard_jones(atomic_numbers, *, key=None, dtype=jnp.float64, epsilon_eV=0.01, sigma_A=2.0, cutoff_A=5.0, onset_A=None):
    del key, dtype
    onset = 0.8 * cutoff_A if onset_A is None else onset_A
    if not 0 < onset < cutoff_A:
        raise ValueError(f"need 0 < onset_A < cutoff_A; got onset_A={onset}, cutoff_A={cutoff_A}")

    def fn(positions, cell, z, neighbours):
        return lennard_jones_energy(positions, cell, z, neighbours, epsilon_eV=epsilon_eV, sigma_A=sigma_A, cutoff_A=cutoff_A, onset_A=onset)

    return FunctionPotential(fn, cutoff=float(cutoff_A), atomic_numbers=tuple(atomic_numbers), uses_neighbours=True)


register("nequip", _build_nequip)
register("mace", _build_mace)
register("lennard_jones", _build_lennard_jones)
