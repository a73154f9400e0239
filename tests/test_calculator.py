"""slhmc_jax.calculator against ASE's own Lennard-Jones calculator and closed forms."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax import neighbours as nl
from slhmc_jax.calculator import Calculator
from slhmc_jax.models import FunctionPotential

EPS, SIGMA, RC = 0.0104, 3.4, 8.0


def lj_shifted(positions, cell, atomic_numbers, neighbours):
    """Plain LJ truncated and energy-shifted at RC: ASE's LennardJones(smooth=False) form."""
    d = nl.edge_vectors(positions, cell, neighbours)
    r2 = jnp.sum(d * d, axis=-1)
    inside = neighbours.mask & (r2 < RC**2)
    r2s = jnp.where(inside, r2, RC**2)
    sr6 = (SIGMA**2 / r2s) ** 3
    e0 = 4 * EPS * ((SIGMA / RC) ** 12 - (SIGMA / RC) ** 6)
    return 0.5 * jnp.sum(jnp.where(inside, 4 * EPS * (sr6 * sr6 - sr6) - e0, 0.0))


def rattled_argon():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    atoms.rattle(0.1, seed=4)
    cell = atoms.get_cell()[:]
    cell[0, 1] += 0.3  # slightly sheared
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def test_lennard_jones_matches_ase():
    """Energy, forces and stress of a rattled 4-atom fcc cell (cell < cutoff: many images)."""
    atoms = rattled_argon()
    ref = atoms.copy()
    ref.calc = LennardJones(epsilon=EPS, sigma=SIGMA, rc=RC, smooth=False)
    atoms.calc = Calculator(FunctionPotential(lj_shifted, cutoff=RC, uses_neighbours=True))
    assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-10)
    # second call after a move reuses the neighbour list (skin) and still agrees
    for a in (atoms, ref):
        a.positions[0] += [0.05, -0.02, 0.01]
    assert abs(atoms.get_potential_energy() - ref.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-10)


def test_function_potential_without_cutoff():
    """A harmonic dimer E = k/2 (r - r0)^2 sees all atoms; no neighbour list."""
    k, r0 = 3.0, 1.1

    def dimer(positions, cell, z):
        r = jnp.linalg.norm(positions[1] - positions[0])
        return 0.5 * k * (r - r0) ** 2

    atoms = Atoms("N2", positions=[[0, 0, 0], [0.3, 0.4, 1.2]])
    atoms.calc = Calculator(FunctionPotential(dimer))
    r = np.linalg.norm(atoms.positions[1] - atoms.positions[0])
    assert abs(atoms.get_potential_energy() - 0.5 * k * (r - r0) ** 2) < 1e-12
    u = (atoms.positions[1] - atoms.positions[0]) / r
    np.testing.assert_allclose(atoms.get_forces(), [k * (r - r0) * u, -k * (r - r0) * u], atol=1e-12)


def test_unknown_element_is_named():
    pot = FunctionPotential(lj_shifted, cutoff=RC, uses_neighbours=True, atomic_numbers=(18,))
    atoms = rattled_argon()
    atoms.numbers[1] = 36
    atoms.calc = Calculator(pot)
    with pytest.raises(ValueError, match="Kr"):
        atoms.get_potential_energy()
