"""slhmc_jax.analysis.observables against independent references and closed forms.

RDF: a direct O(N^2) sum over a generous cube of periodic images written here; rutile bond
lengths from the crystal structure; cell metrics from the lattice parameters. (The distances
between distributions are tested in test_statistics.py; the bad-input test below also checks
that they stay public names of this module.)
"""

import itertools
import math

import numpy as np
import pytest
from ase import Atoms
from ase.geometry import cellpar_to_cell

import slhmc_jax  # noqa: F401  (x64)
from slhmc_jax.analysis import observables as ob
from slhmc_jax.structures import rutile

A, C, U = 4.594, 2.959, 0.305  # rutile TiO2


# ----------------------------------------------------------------------------------------
# independent references


def _image_cube(cell, pbc, radius):
    """Every lattice translation with |S_k| <= ceil(radius / w_k) + 1 along periodic k (a superset)."""
    cell = np.asarray(cell, float)
    volume = abs(np.linalg.det(cell)) if all(pbc) else None
    ranges = []
    for k in range(3):
        if not pbc[k]:
            ranges.append([0])
            continue
        if volume is None:
            # partly periodic: the spacing of the periodic rows' planes within their own span
            others = [cell[j] for j in range(3) if j != k and pbc[j]]
            if others:
                n = np.cross(cell[k], others[0])
                n = np.cross(others[0], n)
                w = abs(cell[k] @ n) / np.linalg.norm(n)
            else:
                w = np.linalg.norm(cell[k])
        else:
            w = volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]))
        n_k = int(math.ceil(radius / w)) + 1
        ranges.append(range(-n_k, n_k + 1))
    return np.array(list(itertools.product(*ranges)), float)


def _pair_distances(atoms, a, b, radius):
    """All |x_j - x_i + S @ cell| < radius, i in a, j in b, over the image cube (i = j, S = 0 excluded)."""
    symbols = np.array(atoms.get_chemical_symbols())
    ia, ib = np.nonzero(symbols == a)[0], np.nonzero(symbols == b)[0]
    S = _image_cube(atoms.cell, atoms.pbc, radius)
    T = S @ np.asarray(atoms.cell)
    x = atoms.positions
    d = x[ib][None, :, None, :] - x[ia][:, None, None, :] + T[None, None, :, :]
    r = np.linalg.norm(d, axis=-1)
    self_pair = (ia[:, None] == ib[None, :])[:, :, None] & np.all(S == 0, axis=1)[None, None, :]
    return r, self_pair, ia.size, ib.size


def _reference_rdf(frames, a, b, r_max, n_bins):
    """Per-frame g_ab on equal bins of [0, r_max), ideal-gas count at each frame's own volume."""
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    out, all_r = [], []
    for atoms in frames:
        r, self_pair, na, nb = _pair_distances(atoms, a, b, r_max)
        r = r[~self_pair]
        r = r[r < r_max]
        all_r.append(r)
        counts, _ = np.histogram(r, edges)
        volume = abs(np.linalg.det(atoms.cell)) if atoms.pbc.any() else 4.0 / 3.0 * np.pi * r_max**3
        out.append(counts * volume / (na * nb) / shell)
    all_r = np.concatenate(all_r)
    # the comparison is bin by bin: no distance may sit on a bin edge (rounding would pick a side)
    scaled = all_r * n_bins / r_max
    assert np.min(np.abs(scaled - np.round(scaled))) > 1e-9
    return np.array(out)


def _reference_nearest(atoms, a, b, k):
    r, self_pair, _, _ = _pair_distances(atoms, a, b, 8.0)
    r = np.where(self_pair, np.inf, r).reshape(r.shape[0], -1)
    return np.sort(r, axis=1)[:, :k]


def _lennard_jones_fluid(n_cells=3, density=0.8, temperature=1.5, sweeps=150, seed=0):
    """A disordered argon-like LJ snapshot (sigma = 3.405 A) by Metropolis MC from FCC (reduced units)."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cells = np.array(list(itertools.product(range(n_cells), repeat=3)))
    frac = (cells[:, None, :] + base[None]).reshape(-1, 3) / n_cells
    n = frac.shape[0]
    box = (n / density) ** (1.0 / 3.0)
    x = frac * box

    def energy_of(i, xi):
        d = x - xi
        d -= box * np.round(d / box)
        r2 = np.sum(d * d, axis=1)
        r2[i] = np.inf
        r2 = r2[r2 < 2.5**2]
        inv6 = 1.0 / r2**3
        return np.sum(4.0 * (inv6 * inv6 - inv6))

    for _ in range(sweeps):
        for i in rng.permutation(n):
            trial = x[i] + rng.uniform(-0.15, 0.15, 3)
            if rng.random() < math.exp(min(0.0, -(energy_of(i, trial) - energy_of(i, x[i])) / temperature)):
                x[i] = trial % box
    sigma = 3.405
    return Atoms(f"Ar{n}", positions=x * sigma, cell=np.eye(3) * box * sigma, pbc=True)


# ----------------------------------------------------------------------------------------
# RDF


def _strained_rutile_frames(repeat, strains, seed):
    rng = np.random.default_rng(seed)
    out = []
    for e in strains:
        atoms = rutile(repeat=repeat)
        atoms.set_cell(np.asarray(atoms.cell) @ (np.eye(3) + np.asarray(e)), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        out.append(atoms)
    return out


@pytest.mark.parametrize(
    "case",
    ["supercell_npt", "supercell_perfect", "cell6", "cell6_sheared", "slab"],
)
def test_rdf_matches_direct_image_sum(case):
    if case == "supercell_npt":
        # three frames of different volume: every frame is normalised by its own volume
        frames = _strained_rutile_frames((2, 2, 3), [np.zeros(3), np.diag([0.02, 0.02, -0.01]), np.diag([-0.03, 0.01, 0.02])], 1)
    elif case == "supercell_perfect":
        frames = [rutile(repeat=(2, 2, 2))]
    elif case == "cell6":
        frames = _strained_rutile_frames((1, 1, 1), [np.zeros(3), np.diag([0.01, 0.01, 0.03])], 2)
    elif case == "cell6_sheared":
        shear = np.array([[0.0, 0.25, 0.1], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]])
        frames = _strained_rutile_frames((1, 1, 1), [shear], 3)
    else:
        slab = rutile(repeat=(2, 2, 2))
        slab.pbc = (True, True, False)
        slab.center(vacuum=5.0, axis=2)
        frames = [slab]
    for pair in [("Ti", "O"), ("O", "O"), ("Ti", "Ti")]:
        r, g = ob.rdf_frames(frames, pair, r_max_A=6.0, n_bins=200)
        ref = _reference_rdf(frames, *pair, 6.0, 200)
        np.testing.assert_allclose(r, (np.arange(200) + 0.5) * 0.03, rtol=0, atol=1e-14)
        assert np.max(np.abs(g - ref)) < 1e-6, (case, pair, np.max(np.abs(g - ref)))
        assert ref.sum() > 0
        _, g_mean = ob.rdf(frames, pair, 6.0, 200)
        np.testing.assert_allclose(g_mean, ref.mean(axis=0), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def lj_fluid():
    return _lennard_jones_fluid()


def test_rdf_of_disordered_lennard_jones_fluid(lj_fluid):
    sigma = 3.405
    box = lj_fluid.cell[0, 0]
    r_max = 15.0  # beyond half the box (8.8 A): needs images past the minimum image
    assert r_max > box / 2
    r, g = ob.rdf(lj_fluid, ("Ar", "Ar"), r_max_A=r_max, n_bins=150)
    ref = _reference_rdf([lj_fluid], "Ar", "Ar", r_max, 150)[0]
    assert np.max(np.abs(g - ref)) < 1e-6
    # physics of a dense fluid: a hard core, one strong first peak near 2^(1/6) sigma, then g -> 1
    assert np.all(g[r < 0.85 * sigma] == 0)
    peak = r[np.argmax(g)]
    assert 1.0 * sigma < peak < 1.25 * sigma and 2.0 < g.max() < 4.0
    far = (r > 2.5 * sigma) & (r < 4.4 * sigma)  # about two oscillation periods
    assert abs(np.mean(g[far]) - 1.0) < 0.03, np.mean(g[far])


def test_rdf_of_molecule_uses_the_histogram_sphere():
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    frames = [water.copy() for _ in range(3)]
    for i, f in enumerate(frames):
        f.positions[1, 0] += 0.01 * i
    r_max = 1.25
    r, g = ob.rdf_frames(frames, ("O", "H"), r_max_A=r_max, n_bins=40)
    ref = _reference_rdf(frames, "O", "H", r_max, 40)
    assert np.max(np.abs(g - ref)) < 1e-6
    # g integrates to the partners within r_max: 4 pi rho int g r^2 dr = N_H with rho = N_H / V_sphere
    edges = np.linspace(0, r_max, 41)
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    np.testing.assert_allclose((g * shell).sum(axis=1) * 2 / (4 / 3 * np.pi * r_max**3), 2.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# nearest-neighbour distances


@pytest.mark.parametrize("repeat", [(1, 1, 1), (2, 2, 3)])
def test_rutile_octahedron_bond_lengths(repeat):
    atoms = rutile(A, C, U, repeat=repeat)
    d = ob.nearest_neighbour_distances(atoms, "Ti", "O", k=6)
    n_ti = 2 * int(np.prod(repeat))
    assert d.shape == (1, n_ti, 6)
    apical = math.sqrt(2.0) * U * A
    equatorial = math.sqrt(2.0 * (0.5 - U) ** 2 * A**2 + C**2 / 4.0)
    assert equatorial < apical  # rutile at u = 0.305: four short equatorial, two long apical bonds
    np.testing.assert_allclose(d[0, :, :4], equatorial, rtol=0, atol=1e-10)
    np.testing.assert_allclose(d[0, :, 4:], apical, rtol=0, atol=1e-10)
    # each O sits in a planar OTi3 triangle: two equatorial bonds and one apical bond
    o = ob.nearest_neighbour_distances(atoms, "O", "Ti", k=3)
    np.testing.assert_allclose(o[0], np.broadcast_to([equatorial, equatorial, apical], o[0].shape), rtol=0, atol=1e-10)


def test_nearest_neighbours_match_image_sum_on_thermal_frames():
    frames = _strained_rutile_frames((1, 1, 1), [np.zeros(3), np.diag([0.02, -0.01, 0.03])], 5)
    frames += _strained_rutile_frames((1, 1, 2), [np.array([[0, 0.2, 0], [0, 0, 0.1], [0, 0, 0]])], 6)
    for a, b, k in [("Ti", "O", 6), ("O", "O", 8), ("Ti", "Ti", 10)]:
        for f in frames:
            np.testing.assert_allclose(ob.nearest_neighbour_distances(f, a, b, k)[0], _reference_nearest(f, a, b, k), rtol=0, atol=1e-12)
    d = ob.nearest_neighbour_distances(frames[:2], "Ti", "O", 6)
    assert d.shape == (2, 2, 6) and np.all(np.diff(d, axis=-1) >= 0)


# ----------------------------------------------------------------------------------------
# cell metrics


def test_cell_metrics_recover_lattice_parameters():
    pars = np.array([[4.6, 4.7, 3.0, 90.0, 90.0, 90.0], [5.1, 6.2, 7.3, 75.0, 100.0, 115.0]])
    frames = (np.zeros((2, 1, 3)), np.stack([cellpar_to_cell(p) for p in pars]), [22], True)
    m = ob.cell_metrics(frames)
    for key, col in zip(("a_A", "b_A", "c_A", "alpha_deg", "beta_deg", "gamma_deg"), range(6)):
        np.testing.assert_allclose(m[key], pars[:, col], rtol=1e-12, atol=1e-10)
    a, b, c = pars[:, 0], pars[:, 1], pars[:, 2]
    ca, cb, cg = (np.cos(np.radians(pars[:, i])) for i in (3, 4, 5))
    volume = a * b * c * np.sqrt(1 - ca**2 - cb**2 - cg**2 + 2 * ca * cb * cg)
    np.testing.assert_allclose(m["volume_A3"], volume, rtol=1e-12)
    np.testing.assert_allclose(m["c_over_a"], c / a, rtol=1e-12)
    r = ob.cell_metrics(rutile(A, C, U))
    np.testing.assert_allclose([r["volume_A3"][0], r["c_over_a"][0]], [A * A * C, C / A], rtol=1e-12)


# ----------------------------------------------------------------------------------------
# bad input


def test_bad_input_is_a_clear_error():
    cell6 = rutile()
    bigger = rutile(repeat=(1, 1, 2))
    with pytest.raises(ValueError, match="same number of atoms: frame 0 has 6, frame 1 has 12"):
        ob.rdf([cell6, bigger])
    swapped = cell6.copy()
    swapped.numbers = swapped.numbers[::-1]
    with pytest.raises(ValueError, match="frame 1 has other atomic numbers"):
        ob.nearest_neighbour_distances([cell6, swapped])
    with pytest.raises(ValueError, match="element 'Zr' is not in the frames \\(elements present: O, Ti\\)"):
        ob.rdf(cell6, ("Zr", "O"))
    with pytest.raises(ValueError, match="'Qq' is not a chemical symbol"):
        ob.nearest_neighbour_distances(cell6, "Qq", "O")
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    with pytest.raises(ValueError, match="r_max_A=6.0 is larger than the data support.*no two atoms are further apart than 1.5"):
        ob.rdf(water, ("O", "H"), r_max_A=6.0)
    with pytest.raises(ValueError, match="k=3 but each O atom has only 2 H neighbours"):
        ob.nearest_neighbour_distances(water, "O", "H", k=3)
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        ob.rdf(cell6, n_bins=0)
    with pytest.raises(ValueError, match="r_max_A must be a positive finite distance"):
        ob.rdf(cell6, r_max_A=-1.0)
    with pytest.raises(ValueError, match="no lattice parameters"):
        ob.cell_metrics(water)
    with pytest.raises(ValueError, match="x contains non-finite values"):
        ob.wasserstein([1.0, np.nan, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="g_x has 3 bins, g_y 4 and r_A 3"):
        ob.rdf_distance(np.ones((5, 3)), np.ones((5, 4)), [0.05, 0.15, 0.25])
    with pytest.raises(ValueError, match="energies_target_eV has 3 entries, energies_source_eV 2"):
        ob.importance_ess([1.0, 2.0, 3.0], [1.0, 2.0], 300.0)
    with pytest.raises(ValueError, match="numbers has 2 entries but the frames have 3 atoms"):
        ob.as_frames((np.zeros((1, 3, 3)), np.eye(3), [1, 8], True))
