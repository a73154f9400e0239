"""Velocity Verlet: reversibility with neighbour rebuilds, batched rebuilds, energy conservation, MB momenta."""

import dataclasses

import ase.build
import jax
import jax.numpy as jnp
import numpy as np

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax import neighbours as nb
from slhmc_jax.models import registry
from slhmc_jax.sampler.integrators import kinetic_energy, maxwell_boltzmann, velocity_verlet, velocity_verlet_batch
from slhmc_jax.units import KB_EV_PER_K

LJ = registry.build("lennard_jones", (18,), epsilon_eV=0.0104, sigma_A=3.4, cutoff_A=5.0, onset_A=4.0)


def _argon(skin):
    atoms = ase.build.bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
    x = jnp.asarray(atoms.positions)
    cell = jnp.asarray(atoms.cell.array)
    layout, nbrs = nb.allocate(x, cell, True, 5.0, skin)
    masses = jnp.asarray(atoms.get_masses())
    z = jnp.asarray(atoms.numbers)
    return x, cell, layout, nbrs, masses, z


def test_reversible_within_1e8_A_with_rebuilds():
    x, cell, layout, nbrs, masses, z = _argon(skin=0.05)
    p = maxwell_boltzmann(jax.random.PRNGKey(0), masses, 600.0)
    run = jax.jit(lambda x, p, n: velocity_verlet(LJ, None, x, p, cell, z, masses, 200, 2.0, layout, n))
    fwd = run(x, p, nbrs)
    assert not bool(fwd.overflow)
    assert int(fwd.n_rebuilds) >= 5  # the small skin forces many rebuilds along the way
    assert float(jnp.max(jnp.abs(fwd.positions - x))) > 0.3
    back = run(fwd.positions, -fwd.momenta, fwd.neighbours)
    assert int(back.n_rebuilds) >= 5 and not bool(back.overflow)
    assert float(jnp.max(jnp.abs(back.positions - x))) < 1e-8
    assert float(jnp.max(jnp.abs(back.momenta + p))) < 1e-8 * float(jnp.max(jnp.abs(p)))


def test_batch_rebuilds_only_moving_chains_and_matches_single_chain():
    x, cell, layout, nbrs, masses, z = _argon(skin=0.1)
    p0 = maxwell_boltzmann(jax.random.PRNGKey(3), masses, 400.0)
    xs = jnp.stack([x, x])  # chain 1 sits still at the (force-free) fcc lattice
    ps = jnp.stack([p0, jnp.zeros_like(p0)])
    cells = jnp.stack([cell, cell])
    nbrs2 = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), nbrs)
    batch = jax.jit(lambda: velocity_verlet_batch(LJ, None, xs, ps, cells, z, masses, 60, 2.0, layout, nbrs2))()
    assert int(batch.n_rebuilds[0]) > 0 and int(batch.n_rebuilds[1]) == 0
    single = jax.jit(lambda: velocity_verlet(LJ, None, x, p0, cell, z, masses, 60, 2.0, layout, nbrs))()
    np.testing.assert_allclose(np.asarray(batch.positions[0]), np.asarray(single.positions), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(batch.positions[1]), np.asarray(x), rtol=0, atol=1e-12)
    # a traced step count runs the same trajectory (no recompilation for warm-up tuning of L)
    traced = jax.jit(lambda n: velocity_verlet(LJ, None, x, p0, cell, z, masses, n, 2.0, layout, nbrs))(jnp.int32(60))
    np.testing.assert_allclose(np.asarray(traced.positions), np.asarray(single.positions), rtol=0, atol=1e-12)


def test_energy_conserved_and_overflow_flagged():
    x, cell, layout, nbrs, masses, z = _argon(skin=0.3)
    p = maxwell_boltzmann(jax.random.PRNGKey(1), masses, 300.0)
    tr = jax.jit(lambda: velocity_verlet(LJ, None, x, p, cell, z, masses, 100, 1.0, layout, nbrs))()
    h0 = tr.energy_start + kinetic_energy(p, masses)
    h1 = tr.energy_end + kinetic_energy(tr.momenta, masses)
    assert abs(float(h1 - h0)) < 1e-3 * len(masses) * KB_EV_PER_K * 300  # dt^2 error, small vs kT per atom
    # a list with too small a capacity reports overflow (the host must re-run the trajectory)
    small = dataclasses.replace(layout, capacity=8)
    tr_bad = jax.jit(lambda: velocity_verlet(LJ, None, x, p, cell, z, masses, 5, 1.0, small, nb.build(small, x, cell)))()
    assert bool(tr_bad.overflow) and int(tr_bad.max_pairs) > 8


def test_maxwell_boltzmann_variance():
    masses = jnp.array([1.0, 16.0, 47.9] * 2000)
    p = maxwell_boltzmann(jax.random.PRNGKey(2), masses, 500.0)
    v = np.asarray(p**2 / masses[:, None]).reshape(2000, 3, 3).mean(axis=(0, 2)) / (KB_EV_PER_K * 500.0)
    np.testing.assert_allclose(v, 1.0, atol=0.05)  # <p^2/m> = kT per component, standard error ~0.018
