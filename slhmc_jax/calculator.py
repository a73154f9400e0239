"""Energy, forces and stress of any Potential by autodiff; an ASE calculator around it.

Pure part (jit/vmap-able):

    forces  F_i = -dE/dx_i                                   (eV/A)
    stress  sigma = (1/V) dE(x (1+eps), cell (1+eps))/d eps   at eps = 0   (eV/A^3)

The stress is the symmetric strain derivative in ASE's sign convention (``atoms.get_stress()``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from slhmc_jax import neighbours as nl
from slhmc_jax.models.base import Potential


class Properties(NamedTuple):
    """energy () eV; forces (n_atoms, 3) eV/A; stress (3, 3) eV/A^3 (zeros unless asked)."""

    energy: jax.Array
    forces: jax.Array
    stress: jax.Array


def energy_and_forces(potential: Potential, params, positions, cell, atomic_numbers, neighbours):
    """(energy eV, forces (n_atoms, 3) eV/A) with F = -dE/dx."""
    e, g = jax.value_and_grad(potential.energy, argnums=1)(params, positions, cell, atomic_numbers, neighbours)
    return e, -g


def properties(potential: Potential, params, positions, cell, atomic_numbers, neighbours, *, compute_stress=True) -> Properties:
    """Energy, forces and (optionally) stress of one configuration.

    The stress is computed by applying a homogeneous strain (1 + eps) to positions and cell
    and differentiating at eps = 0: sigma = (1/V) dE/d eps, symmetrised, eV/A^3.
    """
    if not compute_stress:
        e, f = energy_and_forces(potential, params, positions, cell, atomic_numbers, neighbours)
        return Properties(e, f, jnp.zeros((3, 3), positions.dtype))

    def strained(eps, x):
        deform = jnp.eye(3, dtype=x.dtype) + 0.5 * (eps + eps.T)
        return potential.energy(params, x @ deform, cell @ deform, atomic_numbers, neighbours)

    eps0 = jnp.zeros((3, 3), positions.dtype)
    e, (g_eps, g_x) = jax.value_and_grad(strained, argnums=(0, 1))(eps0, positions)
    volume = jnp.abs(jnp.linalg.det(cell))
    return Properties(e, -g_x, g_eps / volume)


class Calculator(_AseCalculator):
    """ASE calculator for any :class:`~slhmc_jax.models.Potential`.

    Implements energy, free_energy, forces, stress (and per-atom energies where the potential
    has ``node_energies``). Positions in A, energies in eV, stress eV/A^3 (ASE convention).
    The neighbour list (the dense per-atom format for models that prefer it) is allocated on the
    first call and regrown on overflow; compiled functions are reused while the atom count and
    layout stay the same.

    Args:
        potential: the model.
        params: parameters to use (default ``potential.params``).
        skin: neighbour-list skin, A (reused across MD steps while atoms move < skin/2).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, potential: Potential, params=None, skin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential
        self.params = potential.params if params is None else params
        self.skin = float(skin)
        self._layout = None
        self._nbrs = None
        self._update = jax.jit(nl.update, static_argnums=0)
        self._fn = jax.jit(lambda params, x, c, z, nb: properties(potential, params, x, c, z, nb, compute_stress=True))
        self._node_fn = None
        if hasattr(potential, "node_energies"):
            self._node_fn = jax.jit(lambda params, x, c, z, nb: potential.node_energies(params, x, c, z, nb))

    def _neighbours(self, positions, cell, pbc):
        if self.potential.cutoff is None:
            return None
        layout = self._layout
        if layout is None or layout.n_atoms != len(positions) or layout.pbc != tuple(pbc):
            dense = "auto" if getattr(self.potential, "prefers_dense_neighbours", False) else None
            self._layout, self._nbrs = nl.allocate(positions, cell, pbc, self.potential.cutoff, self.skin,
                                                   max_neighbours=dense)
            return self._nbrs
        nbrs = self._update(layout, jnp.asarray(positions), jnp.asarray(cell), self._nbrs)
        if bool(nbrs.overflow):
            self._layout, nbrs = nl.reallocate(layout, positions, cell)
        self._nbrs = nbrs
        return nbrs

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or all_changes)
        atoms = self.atoms
        pbc = tuple(bool(p) for p in atoms.get_pbc())
        positions, cell, _ = nl.validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), pbc)
        z = self.potential_numbers(atoms)
        nbrs = self._neighbours(positions, cell, pbc)
        out = self._fn(self.params, jnp.asarray(positions), jnp.asarray(cell), jnp.asarray(z), nbrs)
        energy = float(out.energy)
        if not np.isfinite(energy):
            raise ValueError(f"potential returned a non-finite energy ({energy}) for {atoms.get_chemical_formula()}")
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = np.asarray(out.forces, dtype=np.float64)
        if "energies" in properties:
            if self._node_fn is None:
                raise ValueError(f"{type(self.potential).__name__} has no per-atom energies (node_energies)")
            self.results["energies"] = np.asarray(
                self._node_fn(self.params, jnp.asarray(positions), jnp.asarray(cell), jnp.asarray(z), nbrs), dtype=np.float64
            )
        if all(pbc):
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(out.stress, dtype=np.float64))

    def potential_numbers(self, atoms) -> np.ndarray:
        """Atomic numbers, checked against the potential's species table."""
        return check_species(self.potential, atoms.get_atomic_numbers())


def check_species(potential: Potential, atomic_numbers) -> np.ndarray:
    """Host-side: ``atomic_numbers`` (n_atoms,) as an int array; ValueError naming every element
    missing from the potential's species table (any element passes a table of None)."""
    from slhmc_jax.models.flax_potential import SpeciesTable

    z = np.asarray(atomic_numbers)
    table = getattr(potential, "atomic_numbers", None)
    return z if table is None else SpeciesTable(table).check(z)
