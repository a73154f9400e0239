"""One parametrized physics test set over every registered model (float64), plus the
"write one flax module" path end to end (registry -> Calculator -> ASE)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.neighborlist import neighbor_list

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax import testing
from slhmc_jax.calculator import Calculator
from slhmc_jax.models import FlaxPotential, registry

ELEMENTS = (1, 8, 22)


MODEL_CASES = {
    "nequip": dict(cutoff=4.0, hidden_irreps="8x0e+4x1o+2x2e", n_layers=2, n_basis=6, radial_hidden=(8,), species_energies_eV=(-1.0, -2.0, -3.0)),
    "lennard_jones": dict(epsilon_eV=0.05, sigma_A=0.9, cutoff_A=4.0),
    "mace": dict(hidden_irreps="8x0e+8x1o", r_max=4.0, max_ell=2, correlation=2, num_interactions=2, MLP_irreps="4x0e", radial_MLP=(8, 8)),
    "nequix": dict(cutoff=4.0, hidden_irreps="8x0e+4x1o+2x2e", lmax=2, n_layers=2, radial_basis_size=6, radial_mlp_size=8,
                   radial_mlp_layers=1, avg_n_neighbors=12.0, atom_energies_eV=(-1.0, -2.0, -3.0)),
}


@pytest.fixture(scope="module", params=sorted(MODEL_CASES))
def potential(request):
    name = request.param
    assert name in registry.available(), f"{name} is not registered"
    return registry.build(name, ELEMENTS, dtype=jnp.float64, **MODEL_CASES[name])


def rutile(rattle=0.05, seed=1) -> Atoms:
    """6-atom rutile TiO2 (a = 4.59, c = 2.96, u = 0.305); c < cutoff so several images interact."""
    a, c, u = 4.594, 2.959, 0.305
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5], [0.5 - u, 0.5 + u, 0.5]]
    atoms = Atoms("Ti2O4", scaled_positions=frac, cell=np.diag([a, a, c]), pbc=True)
    atoms.rattle(rattle, seed=seed)
    return atoms


def triclinic(seed=2) -> Atoms:
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.8, 0.0], [0.6, 0.7, 3.3]])
    atoms = Atoms("TiO2", scaled_positions=[[0.1, 0.1, 0.1], [0.45, 0.4, 0.5], [0.7, 0.8, 0.85]], cell=cell, pbc=True)
    atoms.rattle(0.03, seed=seed)
    return atoms


def water() -> Atoms:
    atoms = molecule("H2O")
    atoms.rattle(0.02, seed=3)
    return atoms


STRUCTURES = {"rutile": rutile, "triclinic": triclinic, "water": water}


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_invariance(potential, structure):
    testing.assert_invariant(potential, STRUCTURES[structure](), energy_atol=1e-10, forces_atol=1e-9)


@pytest.mark.parametrize("structure", ["rutile", "triclinic"])
def test_periodic_images(potential, structure):
    testing.assert_periodic_image_invariant(potential, STRUCTURES[structure](), energy_atol=1e-9, forces_atol=1e-9)


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_forces_are_minus_gradient(potential, structure):
    testing.assert_forces_match_finite_differences(potential, STRUCTURES[structure](), delta=1e-4, atol=1e-6, max_components=9)


@pytest.mark.parametrize("structure", ["rutile", "triclinic"])
def test_stress_is_strain_derivative(potential, structure):
    testing.assert_stress_matches_strain_derivative(potential, STRUCTURES[structure](), delta=1e-5, atol=1e-7)


def test_smooth_at_cutoff(potential):
    testing.assert_smooth_at_cutoff(potential, rutile()[[0, 2]], width=1e-3, energy_atol=1e-9, forces_atol=1e-6)


def test_nve_conserves_energy(potential):
    atoms = rutile(rattle=0.0)
    testing.assert_nve_conserves_energy(potential, atoms, timestep_fs=0.25, n_steps=200, temperature_K=300.0, max_drift_eV_per_atom=1e-4)


# ----------------------------------------------------------------------------------------
# the checks themselves detect broken models


def test_checks_catch_a_broken_model():
    """A position-dependent (non-invariant) energy and a hard cutoff must fail the checks."""
    from slhmc_jax.models import FunctionPotential

    absolute = FunctionPotential(lambda x, c, z: jnp.sum(jnp.sin(x[:, 0])))
    with pytest.raises(AssertionError, match="invariance"):
        testing.assert_invariant(absolute, water())

    def hard(x, c, z, nb):
        from slhmc_jax import neighbours as nl

        d = nl.edge_vectors(x, c, nb)
        r = jnp.linalg.norm(d, axis=-1)
        return 0.5 * jnp.sum(jnp.where(nb.mask & (r < 3.0), 1.0 / r, 0.0))

    with pytest.raises(AssertionError, match="cutoff"):
        testing.assert_smooth_at_cutoff(FunctionPotential(hard, cutoff=3.0, uses_neighbours=True), water())


# ----------------------------------------------------------------------------------------
# a user-defined flax module, plugged in end to end


class HarmonicBonds(nn.Module):
    """E = 1/2 sum_{ordered pairs within cutoff} 1/2 k (r - r0_{s_i s_j})^2, a learnable r0 table."""

    n_species: int

    @nn.compact
    def __call__(self, species, senders, receivers, edge_vectors, edge_mask):
        r0 = self.param("r0", lambda key, shape, dtype=jnp.float64: jnp.full(shape, 1.5, dtype), (self.n_species, self.n_species))
        k = self.param("k", nn.initializers.constant(2.0), (), edge_vectors.dtype)
        r = jnp.linalg.norm(edge_vectors, axis=-1)
        e_edge = 0.25 * k * (r - r0[species[senders], species[receivers]]) ** 2
        e_edge = jnp.where(edge_mask, e_edge, 0.0)
        return jnp.zeros(species.shape[0], edge_vectors.dtype).at[senders].add(e_edge)


def _harmonic_reference(atoms, cutoff, r0_table, k, table):
    """Closed form with ASE's own neighbour list: E and F = -dE/dx."""
    i, j, d = neighbor_list("ijD", atoms, cutoff)
    index = {z: n for n, z in enumerate(table)}
    s = np.array([index[z] for z in atoms.get_atomic_numbers()])
    r = np.linalg.norm(d, axis=1)
    r0 = r0_table[s[i], s[j]]
    energy = np.sum(0.25 * k * (r - r0) ** 2)
    # dE/dd_k = 0.5 k (r - r0) d/r for each ordered pair; d = x_j - x_i (+ shift)
    g = (0.5 * k * (r - r0) / r)[:, None] * d
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, i, g)
    np.add.at(forces, j, -g)
    return energy, forces


def test_user_flax_module_end_to_end():
    table = (8, 22)

    def builder(atomic_numbers, *, key=None, dtype=jnp.float64, cutoff=3.5):
        return registry.from_flax_module(HarmonicBonds(len(atomic_numbers)), atomic_numbers, cutoff, key=key, dtype=dtype)

    registry.register("harmonic_bonds_test", builder, overwrite=True)
    assert "harmonic_bonds_test" in registry.available()
    pot = registry.build("harmonic_bonds_test", table, cutoff=3.5)
    assert isinstance(pot, FlaxPotential)
    r0 = np.array([[1.3, 1.9], [1.9, 2.8]])
    params = {"params": {"r0": jnp.asarray(r0), "k": jnp.asarray(2.0)}}
    atoms = rutile()
    atoms.calc = Calculator(pot, params=params)
    e_ref, f_ref = _harmonic_reference(atoms, 3.5, r0, 2.0, table)
    assert abs(atoms.get_potential_energy() - e_ref) < 1e-10
    np.testing.assert_allclose(atoms.get_forces(), f_ref, atol=1e-10)


def test_species_table_errors():
    pot = registry.build("nequip", (8, 22), cutoff=3.0, hidden_irreps="4x0e+2x1o", n_layers=1, radial_hidden=(4,))
    with pytest.raises(ValueError, match=r"\['H'\]"):
        pot.species_table.check([1, 8, 22])
    np.testing.assert_array_equal(np.asarray(pot.species_table.index(jnp.array([22, 8, 8]))), [1, 0, 0])
    atoms = water()
    atoms.calc = Calculator(pot)
    with pytest.raises(ValueError, match="'H'"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="unknown model"):
        registry.build("no_such_model", (8,))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("nequip", lambda *a, **k: None)
    with pytest.raises(ValueError, match="distinct"):
        registry.SpeciesTable((8, 8))


def test_flax_potential_vmaps_over_chains():
    """vmap over a chain axis gives the per-configuration energies (batched neighbour lists)."""
    import jax

    from slhmc_jax import neighbours as nl

    pot = registry.build("nequip", (8, 22), cutoff=3.5, hidden_irreps="4x0e+2x1o", n_layers=1, radial_hidden=(4,))
    configs = [rutile(seed=s) for s in (5, 6)]
    x = np.stack([a.get_positions() for a in configs])
    c = np.stack([np.asarray(a.get_cell()) for a in configs])
    _, nbrs = nl.allocate(x, c, True, pot.cutoff, batch=True)
    z = jnp.asarray(configs[0].get_atomic_numbers())
    batched = jax.jit(jax.vmap(pot.energy, in_axes=(None, 0, 0, None, 0)))(pot.params, jnp.asarray(x), jnp.asarray(c), z, nbrs)
    single = [testing.evaluate(pot, a)[0] for a in configs]
    np.testing.assert_allclose(np.asarray(batched), single, rtol=0, atol=1e-10)
