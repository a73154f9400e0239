"""The JAX neighbour list against ASE's primitive_neighbor_list (independent reference)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms
from ase.geometry import cellpar_to_cell
from ase.neighborlist import primitive_neighbor_list

from slhmc_jax import neighbours as nl
from slhmc_jax.neighbours import neighbour_pairs
from slhmc_jax.structures import rutile


def ase_pairs(atoms, cutoff):
    i, j, S = primitive_neighbor_list(
        "ijS", atoms.pbc, np.asarray(atoms.cell), atoms.positions, cutoff, self_interaction=False
    )
    return set(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))


def pair_set(i, j, S):
    return set(zip(np.asarray(i).tolist(), np.asarray(j).tolist(), map(tuple, np.asarray(S).tolist())))


def random_case(rng: np.random.Generator, index: int):
    """A random cell: 1-600 atoms, triclinic (angles 60-120 deg), mixed pbc, thin cells, face atoms."""
    # a few atom counts spanning 1-600 (each new shape compiles once; positions, cells,
    # periodicity and cutoffs are all random)
    n_atoms = int(rng.choice([1, 2, 5, 13, 40, 97, 230, 600]))
    while True:
        angles = rng.uniform(60, 120, size=3)
        lengths = rng.uniform(1.0, 4.0, size=3) * max(1.0, n_atoms ** (1 / 3) * 0.8)
        if index % 5 == 0:
            # a cell much thinner than the cutoff along one direction
            lengths[rng.integers(3)] = rng.uniform(0.6, 2.0)
        cell = cellpar_to_cell(np.concatenate([lengths, angles]))
        volume = abs(np.linalg.det(cell))
        if volume > 0.3 * np.prod(lengths):  # well-formed triclinic cell
            break
    pbc = rng.random(3) < 0.75 if index % 4 else np.ones(3, bool)
    frac = rng.random((n_atoms, 3))
    # atoms on cell faces and corners, exactly
    on_face = rng.random((n_atoms, 3)) < 0.1
    frac[on_face] = rng.choice([0.0, 1.0], size=int(on_face.sum()))
    # non-periodic directions: atoms may stick out of the cell
    frac[:, ~pbc] = frac[:, ~pbc] * 1.6 - 0.3
    positions = frac @ cell
    density = n_atoms / volume
    # target 5-80 neighbours per atom; thin cells get cutoffs several times the thin width
    neighbours_wanted = rng.uniform(5, 80)
    cutoff = (neighbours_wanted / (4 / 3 * np.pi * density)) ** (1 / 3)
    cutoff = float(np.clip(cutoff, 0.8, 7.0))
    if n_atoms == 1:
        cutoff = float(rng.uniform(2.0, 7.0))
    return Atoms(numbers=np.ones(n_atoms, int), positions=positions, cell=cell, pbc=pbc), cutoff


# the first 100 cases in the default run (compile-bound: ~30 shared shapes), all 200 in the slow set
@pytest.mark.parametrize("n_cases", [100, pytest.param(200, marks=pytest.mark.slow)])
def test_matches_ase_on_random_cells(n_cases):
    rng = np.random.default_rng(20261125)
    n_thin = n_mixed = n_total_pairs = 0
    for index in range(n_cases):
        atoms, cutoff = random_case(rng, index)
        i, j, S = neighbour_pairs(atoms, cutoff)
        ours = pair_set(i, j, S)
        ref = ase_pairs(atoms, cutoff)
        assert len(ours) == len(i), "duplicate pairs"
        assert ours == ref, (
            f"case {index}: {len(atoms)} atoms, pbc {atoms.pbc}, cutoff {cutoff:.3f}: "
            f"{len(ours - ref)} extra, {len(ref - ours)} missing"
        )
        widths = np.asarray(nl.plane_widths(jnp.asarray(np.asarray(atoms.cell))))
        n_thin += bool(np.any((widths < cutoff) & atoms.pbc))
        n_mixed += bool(not atoms.pbc.all())
        n_total_pairs += len(ref)
    # the generator really covers the hard cases
    assert n_thin >= 0.15 * n_cases and n_mixed >= 0.15 * n_cases and n_total_pairs > 500 * n_cases  # 51, 40, 4e5 of 100


def test_rutile_primitive_cell_needs_many_images():
    atoms = rutile()
    i, j, S = neighbour_pairs(atoms, 6.0)
    assert len(i) == 544 - 2 * 0  # 544 pairs counting an atom's own images, as vesin/ASE report
    assert pair_set(i, j, S) == ase_pairs(atoms, 6.0)
    assert np.abs(S).max() >= 2  # c = 2.959 A: two images along c


@pytest.mark.parametrize("method", ["brute", "cells"])
def test_cell_list_and_brute_force_agree_on_rattled_supercell(method):
    atoms = rutile(repeat=(3, 3, 5))
    atoms.rattle(0.1, seed=3)
    i, j, S = neighbour_pairs(atoms, 6.0, method=method)
    assert pair_set(i, j, S) == ase_pairs(atoms, 6.0)


def test_zero_and_empty():
    atoms = rutile()
    for out in neighbour_pairs(atoms, 0.0):
        assert len(out) == 0
    single = Atoms("H", positions=[[0, 0, 0]], pbc=False)
    assert len(neighbour_pairs(single, 5.0)[0]) == 0


def _batch(n_chains=16, seed=0):
    base = rutile(repeat=(1, 1, 2))
    rng = np.random.default_rng(seed)
    positions = np.stack([base.positions + rng.normal(scale=0.15, size=base.positions.shape) for _ in range(n_chains)])
    strain = np.eye(3)[None] + rng.normal(scale=0.03, size=(n_chains, 3, 3))
    cells = np.einsum("ij,cjk->cik", np.asarray(base.cell), strain)
    positions = np.einsum("cnj,cjk->cnk", positions, strain)
    return positions, cells


def _masked(nbrs, c=None):
    pick = (lambda x: x) if c is None else (lambda x: x[c])
    mask = np.asarray(pick(nbrs.mask))
    return pair_set(np.asarray(pick(nbrs.senders))[mask], np.asarray(pick(nbrs.receivers))[mask], np.asarray(pick(nbrs.shifts))[mask])


def test_vmapped_list_over_16_chains_equals_per_chain_lists():
    positions, cells = _batch(16)
    layout, batched = nl.allocate(positions, cells, True, 5.0, batch=True)
    assert np.asarray(batched.senders).shape[0] == 16
    for c in range(16):
        _, single = nl.allocate(positions[c], cells[c], True, 5.0)
        atoms = Atoms(numbers=np.ones(len(positions[c]), int), positions=positions[c], cell=cells[c], pbc=True)
        assert _masked(batched, c) == _masked(single) == ase_pairs(atoms, 5.0)
    assert not np.asarray(batched.overflow).any()


def test_overflow_is_detected_and_rebuilt_without_losing_pairs():
    positions, cells = _batch(4, seed=1)
    layout, nbrs = nl.allocate(positions, cells, True, 5.0, batch=True)
    # force an overflow: a layout far too small for the pairs present
    tiny = dataclasses.replace(layout, capacity=10)
    small = jax.jit(jax.vmap(nl.build, in_axes=(None, 0, 0)), static_argnums=0)(tiny, positions, cells)
    assert np.asarray(small.overflow).all()
    assert (np.asarray(small.n_pairs) > 10).all()  # the true count survives the overflow
    grown, rebuilt = nl.reallocate(tiny, positions, cells, batch=True)
    assert grown.capacity > 10 and not np.asarray(rebuilt.overflow).any()
    for c in range(4):
        atoms = Atoms(numbers=np.ones(positions.shape[1], int), positions=positions[c], cell=cells[c], pbc=True)
        assert _masked(rebuilt, c) == ase_pairs(atoms, 5.0)


def test_cell_shrinking_below_searched_images_is_an_overflow():
    atoms = rutile()
    layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, 6.0)
    squeezed = np.asarray(atoms.cell) * np.array([1.0, 1.0, 0.6])[:, None]
    x = atoms.positions * np.array([1.0, 1.0, 0.6])
    out = jax.jit(nl.build, static_argnums=0)(layout, jnp.asarray(x), jnp.asarray(squeezed))
    assert bool(out.overflow)
    grown, fixed = nl.reallocate(layout, x, squeezed)
    assert grown.n_images[2] > layout.n_images[2]
    ref = Atoms(numbers=atoms.numbers, positions=x, cell=squeezed, pbc=True)
    assert _masked(fixed) == ase_pairs(ref, 6.0)


@pytest.mark.parametrize("kernel", ["jnp", "numba"])
def test_full_bin_in_cell_list_is_an_overflow_or_walked_in_full(kernel):
    if kernel == "numba":
        pytest.importorskip("numba")
    atoms = rutile(repeat=(4, 4, 6))
    layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, 5.0, method="cells")
    layout = dataclasses.replace(layout, kernel=kernel)
    assert layout.method == "cells"
    x = atoms.positions.copy()
    centre = np.full(3, 1 / (2 * layout.grid[0])) @ np.asarray(atoms.cell)  # middle of the first bin
    x[:60] = centre + np.random.default_rng(0).normal(scale=0.3, size=(60, 3))  # pile atoms into one bin
    out = jax.jit(nl.build, static_argnums=0)(layout, jnp.asarray(x), jnp.asarray(np.asarray(atoms.cell)))
    ref = Atoms(numbers=atoms.numbers, positions=x, cell=atoms.cell, pbc=True)
    # the jnp tables hold bin_capacity atoms per bin: a full bin is an overflow; the compiled
    # kernel walks every bin's atoms, so nothing is lost and nothing overflows
    assert bool(out.overflow) == (kernel == "jnp")
    grown, fixed = nl.reallocate(layout, x, np.asarray(atoms.cell))
    assert _masked(fixed) == ase_pairs(ref, 5.0)


def test_skin_update_reuses_until_half_skin_then_rebuilds():
    atoms = rutile(repeat=(2, 2, 3))
    cell = np.asarray(atoms.cell)
    cutoff, skin = 5.0, 0.6
    layout, nbrs = nl.allocate(atoms.positions, cell, True, cutoff, skin)
    update = jax.jit(nl.update, static_argnums=0)
    rng = np.random.default_rng(5)
    x = atoms.positions.copy()
    rebuilds = 0
    for _ in range(40):
        x = x + rng.normal(scale=0.03, size=x.shape)
        new = update(layout, jnp.asarray(x), jnp.asarray(cell), nbrs)
        rebuilds += int(not np.array_equal(np.asarray(new.reference_positions), np.asarray(nbrs.reference_positions)))
        nbrs = new
        # every pair within the cutoff now is in the (reused) list
        ref = Atoms(numbers=atoms.numbers, positions=x, cell=cell, pbc=True)
        listed = _masked(nbrs)
        assert ase_pairs(ref, cutoff) <= listed
    assert 0 < rebuilds < 40


def test_update_batch_rebuilds_only_when_needed():
    positions, cells = _batch(8, seed=2)
    layout, nbrs = nl.allocate(positions, cells, True, 5.0, 0.5, batch=True)
    upd = jax.jit(nl.update_batch, static_argnums=0)
    same = upd(layout, jnp.asarray(positions + 0.01), jnp.asarray(cells), nbrs)
    np.testing.assert_array_equal(np.asarray(same.reference_positions), positions)
    moved = positions.copy()
    moved[3, 0] += 0.4  # one chain moves one atom beyond skin/2
    out = upd(layout, jnp.asarray(moved), jnp.asarray(cells), nbrs)
    ref_pos = np.asarray(out.reference_positions)
    np.testing.assert_array_equal(ref_pos[3], moved[3])
    np.testing.assert_array_equal(ref_pos[0], positions[0])  # other chains keep their lists


def test_edge_vectors_match_ase_distances():
    atoms = rutile(repeat=(1, 1, 2))
    atoms.rattle(0.05, seed=0)
    layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), True, 4.0)
    d = np.asarray(nl.edge_vectors(jnp.asarray(atoms.positions), jnp.asarray(np.asarray(atoms.cell)), nbrs))
    mask = np.asarray(nbrs.mask)
    got = np.sort(np.linalg.norm(d[mask], axis=1))
    ref = np.sort(primitive_neighbor_list("d", atoms.pbc, atoms.cell, atoms.positions, 4.0))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    assert np.all(np.linalg.norm(d[~mask], axis=1) > 100)  # padding far outside any cutoff


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (np.array([[0, 0, np.nan]]), np.eye(3), True, 3.0), "non-finite"),
        (lambda: (np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.diag([3.0, 3.0, 0.0]), True, 3.0), "zero volume"),
        (lambda: (np.zeros((1, 3)), [[1, 0, 0], [2, 0, 0], [0, 0, 1]], True, 3.0), "zero volume"),
        (lambda: (np.zeros((1, 3)), np.eye(3), True, -1.0), "cutoff"),
        (lambda: (np.zeros((1, 3)), np.eye(3), True, float("nan")), "cutoff"),
    ],
)
def test_bad_input_raises_clear_value_error(make, message):
    positions, cell, pbc, cutoff = make()
    with pytest.raises(ValueError, match=message):
        nl.allocate(positions, cell, pbc, cutoff)


def test_neighbour_pairs_bad_input():
    atoms = Atoms("H2", positions=[[0, 0, 0], [np.inf, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    with pytest.raises(ValueError, match="non-finite"):
        neighbour_pairs(atoms, 2.0)
    with pytest.raises(ValueError, match="cutoff"):
        neighbour_pairs(rutile(), -2.0)
    flat = Atoms("H2", positions=[[0, 0, 0], [1, 0, 0]], cell=np.diag([4.0, 4.0, 0.0]), pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        neighbour_pairs(flat, 2.0)


def test_compiled_cell_list_equals_pure_jnp_reference_and_ase_on_triclinic_cells():
    """The Numba kernel against its pure-jnp reference (pairs, counts, dense rows) and ASE, on
    triclinic cells with 1, 2, 3 and 4 bins along a direction; then vmapped over all of them."""
    pytest.importorskip("numba")
    rng = np.random.default_rng(11)
    n, cutoff = 40, 2.6
    build = jax.jit(nl.build, static_argnums=0)
    cases, grids = [], set()
    for lengths in ((6.5, 7.0, 9.5), (3.2, 6.4, 10.0), (3.1, 3.3, 3.5), (12.0, 6.2, 6.5)):
        cell = cellpar_to_cell(list(lengths) + list(rng.uniform(70, 110, 3)))
        p = rng.uniform(-0.5, 1.5, (n, 3)) @ cell  # also outside the cell: wrapping matters
        cases.append((p, cell))
        expected = ase_pairs(Atoms(numbers=np.ones(n, int), positions=p, cell=cell, pbc=True), cutoff)
        for dense in (None, "auto"):
            layout, _ = nl.allocate(p, cell, True, cutoff, method="cells", max_neighbours=dense)
            grids.update(layout.grid)
            x, h = jnp.asarray(p), jnp.asarray(cell)
            fast = build(dataclasses.replace(layout, kernel="numba"), x, h)
            assert _masked(fast) == expected and int(fast.n_pairs) == len(expected)
            assert not bool(fast.overflow)
            if not dense:  # the reference's dense rows are its pairs regrouped: one format suffices
                ref = build(dataclasses.replace(layout, kernel="jnp"), x, h)
                assert _masked(ref) == expected and int(ref.n_pairs) == len(expected)
                assert int(fast.max_per_atom) == int(ref.max_per_atom)
            else:
                rows = np.asarray(fast.receivers)[np.asarray(fast.mask)]
                assert np.all(rows == np.nonzero(np.asarray(fast.mask))[0])
    assert grids >= {1, 2, 3, 4}
    positions, cells = np.stack([p for p, _ in cases]), np.stack([c for _, c in cases])
    layout, _ = nl.allocate(positions, cells, True, cutoff, method="cells", batch=True)
    layout = dataclasses.replace(layout, kernel="numba")
    batched = jax.jit(jax.vmap(nl.build, in_axes=(None, 0, 0)), static_argnums=0)
    x, h = jnp.asarray(positions), jnp.asarray(cells)
    out = batched(layout, x, h)
    for c, (p, cell) in enumerate(cases):
        assert _masked(out, c) == ase_pairs(Atoms(numbers=np.ones(n, int), positions=p, cell=cell, pbc=True), cutoff)
    # a capacity one short of the pairs found: an overflow with the exact count, like the reference
    short = dataclasses.replace(layout, capacity=int(np.max(np.asarray(out.n_pairs))) - 1)
    cut = batched(short, x, h)
    assert bool(np.asarray(cut.overflow).any()) and np.array_equal(np.asarray(cut.n_pairs), np.asarray(out.n_pairs))
