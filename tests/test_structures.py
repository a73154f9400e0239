"""Structures: lossless ASE round trip, rutile geometry, thermal displacements, input errors."""

import numpy as np
import pytest
from ase import units

from slhmc_jax.structures import (
    System,
    atomic_numbers_from_symbols,
    make_atoms,
    read_extxyz,
    rutile,
    supercell,
    thermal_displacements,
    write_extxyz,
)


def test_system_round_trip_is_bit_exact():
    atoms = rutile(repeat=(2, 1, 1))
    atoms.rattle(0.1, seed=1)
    atoms.pbc = [True, False, True]
    system = System.from_atoms(atoms)
    back = System.from_atoms(system.to_atoms())
    for a, b in zip(system, back):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(system.masses, atoms.get_masses())


def test_rutile_ti_o_bond_lengths():
    # rutile: 4 equatorial Ti-O bonds sqrt(2) u a and 2 apical sqrt(2 (1/2-u)^2 a^2 + c^2/4)
    a, c, u = 4.594, 2.959, 0.305
    atoms = rutile(a, c, u)
    d = atoms.get_distances(0, [2, 3, 4, 5], mic=True)
    expected = sorted([np.sqrt(2) * u * a] * 2 + [np.sqrt(2 * ((0.5 - u) * a) ** 2 + (c / 2) ** 2)] * 2)
    np.testing.assert_allclose(sorted(d), expected, atol=1e-12)
    assert len(rutile(repeat=(2, 2, 3))) == 72


def test_thermal_displacements_have_einstein_variance():
    atoms = supercell(rutile(), (4, 4, 6))
    rng = np.random.default_rng(0)
    T, nu = 300.0, 5.0
    moved = thermal_displacements(atoms, T, rng, frequency_THz=nu)
    omega = 2 * np.pi * nu * 1e12 * units.s**-1  # rad per ASE time unit
    expected = units.kB * T / (atoms.get_masses() * omega**2)
    observed = (moved.positions - atoms.positions) ** 2 / expected[:, None]
    # mean of chi^2_1 / 1 over 1728 components: 1 +- sqrt(2/1728) = 0.034
    assert abs(observed.mean() - 1.0) < 4 * np.sqrt(2 / observed.size)


def test_extxyz_round_trip(tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = rutile()
    atoms.calc = SinglePointCalculator(atoms, energy=-1.5, forces=np.arange(18.0).reshape(6, 3))
    write_extxyz(tmp_path / "a.xyz", [atoms])
    (back,) = read_extxyz(tmp_path / "a.xyz")
    assert back.get_potential_energy() == -1.5
    np.testing.assert_array_equal(back.get_forces(), np.arange(18.0).reshape(6, 3))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown element symbol.*Xx"):
        atomic_numbers_from_symbols(["O", "Xx"])
    with pytest.raises(ValueError, match="unknown element symbol"):
        make_atoms(["H", "Qq"], [[0, 0, 0], [1, 0, 0]])
    with pytest.raises(ValueError, match="non-finite"):
        make_atoms(["H"], [[0, np.nan, 0]])
    with pytest.raises(ValueError, match="zero volume"):
        make_atoms(["H"], [[0, 0, 0]], cell=[3, 3, 0], pbc=True)
    with pytest.raises(ValueError, match="positive integers"):
        supercell(rutile(), (1, 0, 2))
