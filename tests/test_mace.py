"""MACE in JAX against mace-torch (the independent reference), float64.

Parity: random-weight mace-torch ScaleShiftMACE models with the MACE-MP-0 small/medium hyperparameters
and two other sets, and the real trained weights of ../shared/data (reference values computed by
mace-torch), on rutile, strained+rattled anatase, a water molecule in a periodic box and a cell
smaller than the cutoff. Plus export (save_torch, native save), the e3nn conventions, NVE with real
weights, float32, vmap and input errors. Generic physics checks (invariance, finite differences,
strain derivative, cutoff smoothness) run for every registered model in tests/test_models.py.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

mace_torch = pytest.importorskip("mace", reason="mace-torch is part of the test extra")  # before e3nn
torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.spacegroup import crystal  # noqa: E402

import slhmc_jax  # noqa: E402,F401  (x64)
from slhmc_jax import testing  # noqa: E402
from slhmc_jax.calculator import Calculator  # noqa: E402
from slhmc_jax.models import mace  # noqa: E402
from slhmc_jax.models.mace import irreps  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"

E_TOL_PER_ATOM = 1e-6  # eV/atom
F_TOL = 1e-5  # eV/A
S_TOL = 1e-6  # eV/A^3


# ----------------------------------------------------------------------------------------
# structures


def rutile() -> Atoms:
    a, c, u = 4.594, 2.959, 0.305
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5], [0.5 - u, 0.5 + u, 0.5]]
    atoms = Atoms("Ti2O4", scaled_positions=frac, cell=np.diag([a, a, c]), pbc=True)
    atoms.rattle(0.03, seed=11)
    return atoms


def anatase_strained() -> Atoms:
    atoms = crystal(["Ti", "O"], basis=[(0, 0, 0), (0, 0, 0.2081)], spacegroup=141, cellpar=[3.785, 3.785, 9.514, 90, 90, 90])
    strain = np.array([[0.02, 0.01, 0.0], [0.01, -0.015, 0.005], [0.0, 0.005, 0.01]])
    atoms.set_cell(np.asarray(atoms.get_cell()) @ (np.eye(3) + strain), scale_atoms=True)
    atoms.rattle(0.05, seed=12)
    return atoms


def water_box() -> Atoms:
    atoms = molecule("H2O")
    atoms.rattle(0.02, seed=13)
    atoms.set_cell(np.diag([7.0, 7.5, 8.0]))
    atoms.center()
    atoms.pbc = True
    return atoms


def small_cell() -> Atoms:
    """2 atoms in a triclinic cell ~3 A across: many periodic images of every neighbour inside r_max."""
    cell = np.array([[2.9, 0.0, 0.0], [0.6, 3.0, 0.0], [0.4, 0.5, 3.1]])
    return Atoms("TiO", scaled_positions=[[0.02, 0.01, 0.0], [0.48, 0.52, 0.47]], cell=cell, pbc=True)


STRUCTURES = {"rutile": rutile, "anatase_strained": anatase_strained, "water_box": water_box, "small_cell": small_cell}


# ----------------------------------------------------------------------------------------
# mace-torch reference models


def torch_model(h: mace.MACEHyperparameters, seed: int):
    """A random-weight mace-torch ScaleShiftMACE built directly with mace-torch (float64)."""
    from e3nn import o3
    from mace.modules import ScaleShiftMACE
    from mace.modules.blocks import RealAgnosticInteractionBlock, RealAgnosticResidualInteractionBlock

    classes = {
        "RealAgnosticResidualInteractionBlock": RealAgnosticResidualInteractionBlock,
        "RealAgnosticInteractionBlock": RealAgnosticInteractionBlock,
    }
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    try:
        model = ScaleShiftMACE(
            r_max=h.r_max, num_bessel=h.num_bessel, num_polynomial_cutoff=h.num_polynomial_cutoff, max_ell=h.max_ell,
            interaction_cls=classes[h.interaction], interaction_cls_first=classes[h.interaction_first],
            num_interactions=h.num_interactions, num_elements=len(h.atomic_numbers),
            hidden_irreps=o3.Irreps(h.hidden_irreps), MLP_irreps=o3.Irreps(h.MLP_irreps),
            atomic_energies=np.asarray(h.atomic_energies_eV), avg_num_neighbors=h.avg_num_neighbors,
            atomic_numbers=list(h.atomic_numbers), correlation=list(h.correlations), gate=torch.nn.functional.silu,
            radial_MLP=list(h.radial_MLP), atomic_inter_scale=h.atomic_inter_scale, atomic_inter_shift=h.atomic_inter_shift,
            use_reduced_cg=False,
        )
    finally:
        torch.set_default_dtype(previous)
    # randomise the (zero-initialised in places) weights further so every path carries signal
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.numel():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def torch_results(model, atoms: Atoms):
    from mace.calculators import MACECalculator

    calc = MACECalculator(models=model, device="cpu", default_dtype="float64")
    a = atoms.copy()
    a.calc = calc
    stress = a.get_stress(voigt=False) if all(a.pbc) else None
    return a.get_potential_energy(), a.get_forces(), stress


def assert_parity(potential, atoms, ref_energy, ref_forces, ref_stress, label):
    e, f, s = testing.evaluate(potential, atoms)
    n = len(atoms)
    assert abs(e - ref_energy) / n < E_TOL_PER_ATOM, f"{label}: energy {e} vs mace-torch {ref_energy}"
    assert np.max(np.abs(f - ref_forces)) < F_TOL, f"{label}: forces differ by {np.max(np.abs(f - ref_forces))} eV/A"
    if ref_stress is not None:
        assert np.max(np.abs(s - ref_stress)) < S_TOL, f"{label}: stress differs by {np.max(np.abs(s - ref_stress))} eV/A^3"


ELEMENTS_TIO_H = (1, 8, 22)

HYPERPARAMETER_SETS = {
    "mp0_small": lambda: mace.mp0_hyperparameters("small", atomic_energies_eV=tuple(-0.1 * np.arange(1, 90)),
                                                  atomic_numbers=mace.MP0_ATOMIC_NUMBERS, atomic_inter_scale=0.8, atomic_inter_shift=0.05),
    "mp0_medium": lambda: mace.mp0_hyperparameters("medium", atomic_energies_eV=tuple(-0.1 * np.arange(1, 90)),
                                                   atomic_numbers=mace.MP0_ATOMIC_NUMBERS, atomic_inter_scale=0.8, atomic_inter_shift=0.05),
    # non-residual first block (like mace_swa), correlation 2, L=2 hidden features, 3 interactions
    "nonresidual_L2_3layers": lambda: mace.MACEHyperparameters(
        atomic_numbers=ELEMENTS_TIO_H, atomic_energies_eV=(-1.0, -2.0, -3.0), r_max=5.0, num_bessel=8, num_polynomial_cutoff=6,
        max_ell=2, num_interactions=3, hidden_irreps="8x0e+8x1o+8x2e", MLP_irreps="8x0e", correlation=(2, 3, 2),
        radial_MLP=(16, 16), avg_num_neighbors=12.0, atomic_inter_scale=1.3, atomic_inter_shift=-0.2,
        interaction_first="RealAgnosticInteractionBlock"),
    # odd scalars in the hidden features (both parities in the interaction irreps), correlation 4, one interaction
    "parity_odd_corr4_1layer": lambda: mace.MACEHyperparameters(
        atomic_numbers=ELEMENTS_TIO_H, atomic_energies_eV=(0.5, -0.25, 1.0), r_max=4.5, num_bessel=6, num_polynomial_cutoff=5,
        max_ell=1, num_interactions=1, hidden_irreps="6x0e+6x0o+6x1o", MLP_irreps="4x0e", correlation=4,
        radial_MLP=(8, 8, 8), avg_num_neighbors=9.0),
}

PARITY_CASES = [(h, s) for h in HYPERPARAMETER_SETS for s in STRUCTURES]


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            h = HYPERPARAMETER_SETS[name]()
            tm = torch_model(h, seed=len(cache) + 1)
            cache[name] = (tm, mace.from_torch(tm, dtype=jnp.float64))
        return cache[name]

    return get


@pytest.mark.parametrize("hps,structure", PARITY_CASES)
def test_parity_with_mace_torch(models, hps, structure):
    tm, potential = models(hps)
    atoms = STRUCTURES[structure]()
    assert_parity(potential, atoms, *torch_results(tm, atoms), label=f"{hps}/{structure}")


def test_receiver_major_edges_give_the_same_model(models):
    """The dense per-atom neighbour format (messages summed by batched matmuls) gives the same model
    as the flat pair list (scatter sum); one slot too few is the neighbour list's overflow."""
    import dataclasses

    from slhmc_jax import neighbours as nl

    _, potential = models("mp0_medium")
    atoms = anatase_strained()
    layout, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), (True,) * 3, potential.cutoff, 0.0)
    k = int(nbrs.max_per_atom)
    e, f, s = testing.evaluate(potential, atoms)
    e_d, f_d, s_d = testing.evaluate(potential, atoms, max_neighbours=k)
    assert abs(e - e_d) < 1e-10 and np.max(np.abs(f - f_d)) < 1e-10 and np.max(np.abs(s - s_d)) < 1e-12
    short = nl.build(dataclasses.replace(layout, max_neighbours=k - 1), jnp.asarray(atoms.positions),
                     jnp.asarray(np.asarray(atoms.cell)))
    assert bool(short.overflow) and int(short.max_per_atom) == k


def test_from_torch_reads_the_mace_torch_architecture(models):
    tm, potential = models("mp0_small")
    h = potential.hyperparameters
    assert (h.hidden_irreps, h.max_ell, h.correlation, h.r_max, h.num_bessel, h.num_polynomial_cutoff) == ("128x0e", 3, 3, 6.0, 10, 5)
    assert (h.MLP_irreps, h.radial_MLP, h.num_interactions, len(h.atomic_numbers)) == ("16x0e", (64, 64, 64), 2, 89)
    assert h.interaction_first == h.interaction == "RealAgnosticResidualInteractionBlock"
    n_torch = sum(p.numel() for p in tm.parameters())  # MACECalculator may have frozen them
    n_jax = sum(int(np.size(x)) for x in jax.tree.leaves(potential.params)) - 2 - len(h.atomic_numbers)  # minus scale, shift, E0
    assert n_jax == n_torch


@pytest.mark.parametrize("hps", ["parity_odd_corr4_1layer",  # the pure-JAX reference compiles slowly (~60 s each):
                                 pytest.param("mp0_small", marks=pytest.mark.slow),
                                 pytest.param("nonresidual_L2_3layers", marks=pytest.mark.slow),
                                 pytest.param("mp0_medium", marks=pytest.mark.slow)])
def test_cuequivariance_backend_matches_mace_torch_and_e3nn_path(models, hps):
    """The cuequivariance segmented polynomials (fused edge TP, species-indexed contraction) are the
    same function: parity with mace-torch at the usual tolerances, and with the e3nn-jax path to rounding.
    On a CPU cuequivariance runs its pure-JAX reference; on a GPU the CUDA kernels (benchmarks/model.py)."""
    pytest.importorskip("cuequivariance_jax", reason="cuequivariance-jax is part of the test extra")
    tm, potential = models(hps)
    cue_potential = potential.with_backend("cuequivariance")
    for make in (rutile, small_cell):
        atoms = make()
        assert_parity(cue_potential, atoms, *torch_results(tm, atoms), label=f"{hps}/{make.__name__} (cuequivariance)")
        e, f, s = testing.evaluate(potential.with_backend("e3nn"), atoms)
        e_c, f_c, s_c = testing.evaluate(cue_potential, atoms)
        assert abs(e - e_c) < 1e-10 and np.max(np.abs(f - f_c)) < 1e-10 and np.max(np.abs(s - s_c)) < 1e-12


def test_backend_names_are_checked(models):
    _, potential = models("parity_odd_corr4_1layer")
    with pytest.raises(ValueError, match="backend"):
        potential.with_backend("cuda")
    assert potential.backend == "auto" and potential.with_backend("e3nn").backend == "e3nn"


# ----------------------------------------------------------------------------------------
# real trained weights (reference values computed with mace-torch, ../shared/data)


def _reference_cases():
    out = []
    for model, ref in [("mace_swa.model", "mace_swa_reference.json"), ("mace_swa.model", "mace_swa_reference_gst8.json"),
                       ("mace_spice_L0_converted.model", "mace_spice_L0_reference.json")]:
        if (DATA / ref).exists():
            for s in json.loads((DATA / ref).read_text())["structures"]:
                out.append(pytest.param(model, s, id=f"{model}:{s['name']}"))
    return out or [pytest.param(None, None, marks=pytest.mark.skip(reason="../shared/data not present"))]


@pytest.fixture(scope="module")
def real_models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = mace.load(DATA / name, dtype=jnp.float64)
        return cache[name]

    return get


@pytest.mark.parametrize("model,ref", _reference_cases())
def test_real_weights_match_mace_torch_references(real_models, model, ref):
    potential = real_models(model)
    cell = np.asarray(ref.get("cell_A") or np.zeros((3, 3)), float)
    atoms = Atoms(numbers=ref["numbers"], positions=ref["positions_A"], cell=cell, pbc=ref.get("pbc", False))
    forces_key = next(k for k in ref if k.startswith("forces"))
    stress = None
    stress_key = next((k for k in ref if k.startswith("stress") and ref[k] is not None), None)
    if stress_key is not None and all(atoms.pbc):
        s = np.asarray(ref[stress_key], float)
        if s.size == 6:  # ASE Voigt order xx yy zz yz xz xy
            xx, yy, zz, yz, xz, xy = s
            s = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        stress = s.reshape(3, 3)
    assert_parity(potential, atoms, ref["energy_eV"], np.asarray(ref[forces_key]), stress, label=ref["name"])
    node_key = next((k for k in ref if k.startswith("node_energ")), None)
    if node_key is not None:
        node = np.asarray(Calculator(potential).get_property("energies", atoms))
        ref_node = np.asarray(ref[node_key])
        # mace-torch's MACECalculator reports node energies without E0; detect it from the sum
        e0 = np.asarray(potential.hyperparameters.atomic_energies_eV)[np.searchsorted(potential.atomic_numbers, atoms.numbers)]
        if abs(ref_node.sum() - ref["energy_eV"]) > 1e-6:
            assert abs(ref_node.sum() + e0.sum() - ref["energy_eV"]) < 1e-6
            ref_node = ref_node + e0
        assert np.max(np.abs(node - ref_node)) < E_TOL_PER_ATOM


def test_mace_swa_hyperparameters(real_models):
    if not (DATA / "mace_swa.model").exists():
        pytest.skip("../shared/data not present")
    h = real_models("mace_swa.model").hyperparameters
    assert h.interaction_first == "RealAgnosticInteractionBlock" and h.interaction == "RealAgnosticResidualInteractionBlock"
    assert (h.hidden_irreps, h.correlation, h.r_max, h.atomic_numbers) == ("64x0e+64x1o", 2, 5.0, (32, 51, 52))


# ----------------------------------------------------------------------------------------
# export


def test_save_torch_loads_in_mace_torch_and_reproduces_jax(tmp_path):
    from mace.calculators import MACECalculator

    h = HYPERPARAMETER_SETS["nonresidual_L2_3layers"]()
    potential = mace.build(h, key=jax.random.PRNGKey(7), dtype=jnp.float64)
    path = tmp_path / "exported.model"
    mace.save_torch(potential, path)
    calc = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
    for make in (rutile, water_box):
        atoms = make()
        atoms.calc = calc
        e, f, s = testing.evaluate(potential, atoms)
        assert abs(atoms.get_potential_energy() - e) / len(atoms) < E_TOL_PER_ATOM
        assert np.max(np.abs(atoms.get_forces() - f)) < F_TOL
        assert np.max(np.abs(atoms.get_stress(voigt=False) - s)) < S_TOL
    # and back: torch -> JAX is the identity on the parameters
    again = mace.load(path, dtype=jnp.float64)
    for a, b in zip(jax.tree.leaves(potential.params), jax.tree.leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_native_save_load_is_bit_exact(tmp_path, dtype):
    h = HYPERPARAMETER_SETS["parity_odd_corr4_1layer"]()
    potential = mace.build(h, key=jax.random.PRNGKey(3), dtype=dtype)
    path = tmp_path / "model.npz"
    mace.save(potential, path)
    loaded = mace.load(path)
    assert loaded.hyperparameters == potential.hyperparameters
    la, lb = jax.tree.leaves(potential.params), jax.tree.leaves(loaded.params)
    assert len(la) == len(lb)
    for a, b in zip(la, lb):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        assert np.array_equal(np.asarray(a), np.asarray(b))
    atoms = rutile()
    assert testing.evaluate(potential, atoms)[0] == testing.evaluate(loaded, atoms)[0]


# ----------------------------------------------------------------------------------------
# conventions, precision, batching, errors


def test_spherical_harmonics_and_3j_match_e3nn_torch():
    from e3nn import o3

    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 3))
    sh = mace.model._spherical_harmonics(jnp.asarray(v), 4)
    for l in range(5):
        ref = o3.spherical_harmonics(l, torch.tensor(v), normalize=True, normalization="component").numpy()
        np.testing.assert_allclose(np.asarray(sh[l]), ref, atol=1e-12)
    for l1 in range(7):
        for l2 in range(7):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 9) + 1):
                np.testing.assert_allclose(irreps.wigner_3j(l1, l2, l3), o3.wigner_3j(l1, l2, l3).double().numpy(), atol=1e-12)


def test_coupling_tensors_match_mace_torch():
    from mace.tools.cg import U_matrix_real

    for coupling, out, nu in [("0e+1o+2e+3o", "0e", 3), ("0e+1o+2e+3o", "1o", 3), ("0e+1o+2e", "2e", 2), ("0o+0e+1o+1e", "1e", 3)]:
        ref = U_matrix_real(coupling, out, nu, use_cueq_cg=False, dtype=torch.float64)[-1].numpy()
        ours = irreps.coupling_tensor(tuple(m.ir for m in irreps.parse(coupling)), irreps.parse(out)[0].ir, nu)
        np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_float32_agrees_with_float64():
    potential = mace.build(mace.mp0_hyperparameters("small", atomic_numbers=(8, 22)), key=jax.random.PRNGKey(2))
    atoms = rutile().repeat((1, 1, 2))
    e64, f64, s64 = testing.evaluate(potential, atoms)
    e32, f32, s32 = testing.evaluate(potential.astype(jnp.float32), atoms)
    assert abs(e32 - e64) / len(atoms) < 1e-5
    assert np.max(np.abs(f32 - f64)) < 1e-3 * max(1.0, np.max(np.abs(f64)))


def test_float32_model_computes_in_float32():
    """No float64 tensor in the compiled float32 energy+forces (a NumPy scalar constant would
    silently promote whole layers to float64 under jax_enable_x64 and cost ~1.5x on a CPU)."""
    import re

    from slhmc_jax import neighbours as nl
    from slhmc_jax.calculator import energy_and_forces

    potential = mace.build(mace.mp0_hyperparameters("medium", atomic_numbers=(8, 22)), dtype=jnp.float32)
    atoms = rutile()
    z = jnp.asarray(atoms.numbers)
    for k in (None, 200):  # pair list and dense per-atom format
        _, nbrs = nl.allocate(atoms.positions, np.asarray(atoms.cell), (True,) * 3, potential.cutoff, 0.0, max_neighbours=k)
        hlo = jax.jit(lambda p, x, c, nb: energy_and_forces(potential, p, x, c, z, nb)).lower(
            potential.params, jnp.asarray(atoms.positions, jnp.float32), jnp.asarray(atoms.cell.array, jnp.float32),
            nbrs).as_text()
        assert not re.findall(r"tensor<(?:\d+x)+f64>", hlo)


def test_vmap_over_configurations_equals_single_evaluations():
    from slhmc_jax import neighbours as nl
    from slhmc_jax.calculator import energy_and_forces

    potential = mace.build(HYPERPARAMETER_SETS["nonresidual_L2_3layers"](), key=jax.random.PRNGKey(4))
    base = rutile()
    rng = np.random.default_rng(5)
    xs = np.stack([base.positions + 0.05 * rng.normal(size=base.positions.shape) for _ in range(4)])
    cell = np.asarray(base.cell)
    z = jnp.asarray(base.numbers)
    layout, nbrs = nl.allocate(xs, np.broadcast_to(cell, (4, 3, 3)), (True,) * 3, potential.cutoff, 0.5, batch=True)
    f = jax.jit(jax.vmap(lambda x, nb: energy_and_forces(potential, potential.params, x, jnp.asarray(cell), z, nb)))
    e_batch, f_batch = f(jnp.asarray(xs), nbrs)
    for k in range(4):
        a = base.copy()
        a.positions = xs[k]
        e, forces, _ = testing.evaluate(potential, a)
        assert abs(float(e_batch[k]) - e) < 1e-10
        np.testing.assert_allclose(np.asarray(f_batch[k]), forces, atol=1e-10)


def test_unknown_element_is_named():
    potential = mace.build(HYPERPARAMETER_SETS["parity_odd_corr4_1layer"]())
    atoms = Atoms("TiN", positions=[[0, 0, 0], [1.9, 0, 0]], cell=np.eye(3) * 8, pbc=True)
    with pytest.raises(ValueError, match="N"):
        Calculator(potential).get_potential_energy(atoms)


def test_bad_hyperparameters_are_named():
    with pytest.raises(ValueError, match="correlation"):
        mace.mp0_hyperparameters("small", atomic_numbers=(8, 22), correlation=7)
    with pytest.raises(ValueError, match="hidden_irreps"):
        mace.mp0_hyperparameters("small", atomic_numbers=(8, 22), hidden_irreps="16x0e+8x1o")
    with pytest.raises(ValueError, match="size"):
        mace.mp0_hyperparameters("huge")


# ----------------------------------------------------------------------------------------
# dynamics with real weights


def rocksalt_gst64() -> Atoms:
    """64-atom rock-salt cell (2x2x2 conventional, a = 6.0 A) of Ge/Sb/Te, slightly displaced."""
    rng = np.random.default_rng(21)
    base = crystal(["Te", "Ge"], basis=[(0, 0, 0), (0.5, 0.5, 0.5)], spacegroup=225, cellpar=[6.0, 6.0, 6.0, 90, 90, 90]).repeat(2)
    numbers = base.numbers.copy()
    cation = np.where(numbers == 32)[0]
    numbers[rng.choice(cation, size=len(cation) // 3, replace=False)] = 51  # Sb on a third of the cation sites
    base.numbers = numbers
    base.positions += 0.05 * rng.normal(size=base.positions.shape)
    return base


@pytest.mark.slow
def test_nve_energy_conservation_with_real_weights(real_models):
    if not (DATA / "mace_swa.model").exists():
        pytest.skip("../shared/data not present")
    potential = real_models("mace_swa.model")
    atoms = rocksalt_gst64()
    assert len(atoms) == 64
    # the dense per-atom neighbour format (the fast path; an overflow fails the check)
    testing.assert_nve_conserves_energy(
        potential, atoms, timestep_fs=1.0, n_steps=1000, temperature_K=300.0, max_drift_eV_per_atom=1e-5, skin=1.0,
        max_neighbours="auto")


def test_other_product_basis_is_refused(models):
    """A module whose stored U matrices are mace-torch's reduced (cuequivariance) CG basis holds
    weights that mean something else in ours: from_torch names the problem instead of loading a
    different function. (mace-torch stores the basis a model was built with as buffers.)"""
    import copy

    pytest.importorskip("cuequivariance")
    from mace.tools.cg import U_matrix_real

    tm, _ = models("mp0_small")
    tm = copy.deepcopy(tm)
    contraction = tm.products[0].symmetric_contractions.contractions[0]
    reduced = U_matrix_real("0e+1o+2e+3o", "0e", 3, use_cueq_cg=True, dtype=torch.float64)[-1]
    assert reduced.shape != contraction.U_matrix_3.shape  # really another basis
    contraction.U_matrix_3 = reduced
    with pytest.raises(ValueError, match="U_matrix_3"):
        mace.from_torch(tm)
