"""Nequix in this project's flax implementation against Nequix's own numbers.

Parity: ``nequix-mp-1.nqx`` from ../shared/data, read by :func:`slhmc_jax.models.nequix.load`, against
``nequix_mp1_reference.json`` (energies, forces and stress computed by nequix 0.4.5's own
``NequixCalculator``, JAX backend, float32), through this project's ASE calculator. The tests skip
where the shared files are absent. Physics checks (rotation/reflection invariance, forces = -grad E,
stress = strain derivative, periodic images, smoothness at the cutoff) run on a small random-weight
Nequix in float64, and the file reader is checked on a damaged file.
"""

from __future__ import annotations

import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax import testing
from slhmc_jax.calculator import Calculator
from slhmc_jax.models import nequix

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
NQX = DATA / "nequix-mp-1.nqx"
REFERENCE = DATA / "nequix_mp1_reference.json"

E_TOL_PER_ATOM = 1e-5  # eV/atom (issue 29)
F_TOL = 1e-4  # eV/A (issue 29)
# The reference stress (|sigma| ~ 0.05 eV/A^3) is float32: its rounding error is ~1e-8 eV/A^3.
S_TOL = 1e-6  # eV/A^3

needs_files = pytest.mark.skipif(
    not (NQX.exists() and REFERENCE.exists()),
    reason=f"Nequix weights or reference values absent ({NQX}, {REFERENCE}); fetch models/nequix-mp-1.nqx from atomicarchitects/nequix",
)


def reference_structures():
    data = json.loads(REFERENCE.read_text())
    out = []
    for s in data["structures"]:
        atoms = Atoms(numbers=s["numbers"], positions=s["positions_A"], cell=s["cell_A"], pbc=s["pbc"])
        out.append((s["name"], atoms, s))
    return out


def assert_matches_reference(potential):
    for name, atoms, ref in reference_structures():
        atoms.calc = Calculator(potential)
        n = len(atoms)
        de = abs(atoms.get_potential_energy() - ref["energy_eV"]) / n
        df = np.max(np.abs(atoms.get_forces() - np.asarray(ref["forces_eV_per_A"])))
        ds = np.max(np.abs(atoms.get_stress() - np.asarray(ref["stress_voigt_eV_per_A3"])))
        assert de < E_TOL_PER_ATOM, f"{name}: |dE|/atom = {de:.2e} eV"
        assert df < F_TOL, f"{name}: max |dF| = {df:.2e} eV/A"
        assert ds < S_TOL, f"{name}: max |d sigma| = {ds:.2e} eV/A^3"


@needs_files
def test_nequix_mp1_matches_reference_float32():
    potential = nequix.load(NQX)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(potential.params))
    # 89 elements (Z = 1-83, 89-94), cutoff 6 A (the file's README): Ti and O included
    assert potential.atomic_numbers == tuple(range(1, 84)) + tuple(range(89, 95))
    assert potential.cutoff == 6.0
    assert_matches_reference(potential)


@needs_files
@pytest.mark.slow
def test_nequix_mp1_matches_reference_float64():
    potential = nequix.load(NQX, dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(potential.params))
    assert_matches_reference(potential)


@needs_files
def test_damaged_file_is_refused(tmp_path):
    raw = NQX.read_bytes()
    truncated = tmp_path / "truncated.nqx"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="unreadable array leaf|arrays"):
        nequix.load(truncated)
    not_nequix = tmp_path / "other.nqx"
    not_nequix.write_bytes(b"\x93NUMPY not a config\n" + raw[-64:])
    with pytest.raises(ValueError, match="not a Nequix model file"):
        nequix.load(not_nequix)


# ----------------------------------------------------------------------------------------
# the architecture's physics, small random weights, float64

SMALL = dict(cutoff=4.0, hidden_irreps="8x0e+4x1o+2x2e", lmax=2, n_layers=2, radial_basis_size=6, radial_mlp_size=8,
             radial_mlp_layers=1, avg_n_neighbors=12.0, layer_norm=True, scale=0.8, shift=0.1,
             atom_energies_eV=(-1.0, -2.0, -3.0))


@pytest.fixture(scope="module")
def small():
    return nequix.build((1, 8, 22), key=jax.random.PRNGKey(3), dtype=jnp.float64, **SMALL)


def rutile(seed=1) -> Atoms:
    a, c, u = 4.594, 2.959, 0.305
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5], [0.5 - u, 0.5 + u, 0.5]]
    atoms = Atoms("Ti2O4", scaled_positions=frac, cell=np.diag([a, a, c]), pbc=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


def water() -> Atoms:
    return Atoms("OH2", positions=[[0.0, 0.0, 0.1], [0.76, 0.0, -0.47], [-0.74, 0.05, -0.5]], pbc=False)


def test_invariance_and_periodic_images(small):
    testing.assert_invariant(small, rutile(), energy_atol=1e-10, forces_atol=1e-9, include_reflection=True)
    testing.assert_periodic_image_invariant(small, rutile(), energy_atol=1e-9, forces_atol=1e-9)


def test_forces_and_stress_are_derivatives(small):
    testing.assert_forces_match_finite_differences(small, rutile(), delta=1e-4, atol=1e-6, max_components=9)
    testing.assert_stress_matches_strain_derivative(small, rutile(), delta=1e-5, atol=1e-7)


def test_smooth_at_cutoff(small):
    testing.assert_smooth_at_cutoff(small, water(), width=1e-3, energy_atol=1e-8, forces_atol=1e-6)


def test_atoms_beyond_the_cutoff_do_not_interact(small):
    """An O-Ti pair farther apart than r_c = 4 A: the energy does not change with the distance
    (4.2 A or 12 A) and the forces are exactly zero."""
    e_near, f_near, _ = testing.evaluate(small, Atoms("OTi", positions=[[0, 0, 0], [4.2, 0, 0]]))
    e_far, f_far, _ = testing.evaluate(small, Atoms("OTi", positions=[[0, 0, 0], [7.0, 8.0, 5.0]]))
    assert abs(e_near - e_far) < 1e-12
    assert np.all(f_near == 0.0) and np.all(f_far == 0.0)


def test_float32_computes_in_float32(small):
    """The float32 model computes in float32 (the only float64 tensors in its compiled energy +
    forces are e3nn's Clebsch-Gordan blocks, at most (2 l_max + 1)^3, cast to float32 before use)
    and agrees with the float64 model (same weights) to float32 rounding."""
    small32 = nequix.cast(small, jnp.float32)
    atoms = rutile()
    e32, f32, _ = testing.evaluate(small32, atoms)
    e64, f64, _ = testing.evaluate(small, atoms)
    assert abs(e32 - e64) < 1e-5 * abs(e64) + 1e-5
    assert np.max(np.abs(f32 - f64)) < 1e-4
    from slhmc_jax import neighbours as nl
    from slhmc_jax.calculator import energy_and_forces

    pos, cell, pbc = nl.validate_geometry(atoms.get_positions(), np.asarray(atoms.get_cell()), (True,) * 3)
    _, nbrs = nl.allocate(pos, cell, pbc, small32.cutoff, 0.0)
    args = (small32.params, jnp.asarray(pos, jnp.float32), jnp.asarray(cell, jnp.float32), jnp.asarray(atoms.numbers), nbrs)
    hlo = jax.jit(lambda *a: energy_and_forces(small32, *a)).lower(*args).as_text()
    shapes = [tuple(int(d) for d in t.split("x")[:-1]) for t in re.findall(r"tensor<((?:\d+x)+)f64>", hlo)]
    wide = [t for t in shapes if max(t) > 2 * SMALL["lmax"] + 1]
    assert not wide, f"float64 tensors in the float32 model: {wide[:5]}"
