"""PySCF DFT as an SLHMC target (molecular and periodic), with per-chain warm starts.

Energies in eV (``ase.units.Hartree``), forces in eV/A where PySCF has analytic gradients,
stress in eV/A^3 for periodic LDA/GGA/meta-GGA cells (FFTDF).

Warm starts (the protocol of :mod:`slhmc_jax.targets.base`): ``evaluate_one(atoms, warm)`` is a
pure function of its arguments; batches keep the states per chain. After a converged SCF the
occupied orbitals of the chain are kept (``WarmState``) and, for the chain's next configuration
(same atoms),
re-orthonormalised in the new overlap matrix to give the initial density (``project_occupied``),
which cuts SCF cycles for the small displacements of an HMC step (>= 30% on a TiO2 chain of
0.02 A steps, see tests/test_targets.py). A geometry that does not fit falls back to minao.

Backend: ``device="auto"`` runs gpu4pyscf (``mf.to_gpu()``) where cupy/gpu4pyscf import and a
CUDA device is visible, CPU PySCF otherwise; resolved in the process that evaluates.

Failures: a non-converged SCF goes through a retry ladder (``PySCFTarget.LADDER``, run by ``run_scf``): plain,
second-order SCF (``mf.newton()``), level shift, damping (+ late DIIS), smearing (a Fermi-smeared
SCF whose density seeds an *unsmeared* SCF, so the energy is always the same functional of the
same kind of density), and a fresh minao guess. If every rung fails, a ``TargetEvaluationError`` naming the
configuration, the rungs tried and every setting (incl. max_cycle, conv_tol) is raised.

Sampler policy for a failed evaluation (implemented in ``slhmc_jax.sample``): retrying the
*same* configuration (other SCF settings, another node) is unbiased, because the Metropolis
decision only needs the energy of that configuration; the ladder above and the sampler's
``max_retries`` do exactly that. Rejecting a proposal *because* its DFT failed is not unbiased
(it truncates the target distribution to the region where the SCF converges), so it is never
silent: ``on_failure="raise"`` (default) stops the run with the error (the checkpoint holds the
state before the failed step), ``on_failure="reject"`` must be chosen explicitly and is
documented as that truncation.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np
from ase.units import Bohr, Hartree

from ase.stress import full_3x3_to_voigt_6_stress

from slhmc_jax.targets.base import SingleEvaluationTarget, TargetEvaluationError, TargetResult

PRESETS = {"pbe": "PBE", "r2scan": "r2SCAN", "hse06": "HSE06", "hse": "HSE06", "lda": "LDA", "b3lyp": "B3LYP"}
MIN_DISTANCE_A = 0.5


def check_xc(xc: str) -> str:
    """The libxc name of ``xc`` (a preset such as 'pbe', or any name libxc parses); ValueError otherwise."""
    from pyscf.dft import libxc

    name = PRESETS.get(xc.lower(), xc)
    try:
        libxc.parse_xc(name)
    except Exception as err:  # pyscf raises KeyError/ValueError depending on the name
        raise ValueError(f"unknown exchange-correlation functional {xc!r}: {err}") from None
    return name


def check_atoms(atoms, min_distance_A: float = MIN_DISTANCE_A) -> None:
    """Raise ValueError when any pair of atoms (incl. periodic images) is closer than min_distance_A."""
    from ase.geometry import get_distances

    pos = atoms.get_positions()
    n = len(pos)
    if n < 2:
        return
    pbc = atoms.get_pbc()
    cell = atoms.get_cell() if pbc.any() else None
    _, d = get_distances(pos, cell=cell, pbc=pbc if pbc.any() else None)
    d = d + np.eye(n) * 1e9
    i, j = np.unravel_index(np.argmin(d), d.shape)
    if d[i, j] < min_distance_A:
        s = atoms.get_chemical_symbols()
        raise ValueError(
            f"atoms {i} ({s[i]}) and {j} ({s[j]}) overlap: distance {d[i, j]:.3f} A < {min_distance_A} A"
        )


def gpu_available() -> bool:
    """True when gpu4pyscf and cupy import and at least one CUDA device is visible."""
    try:
        import cupy
        import gpu4pyscf  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDA driver errors: no usable GPU
        return False


def _to_gpu(mf):
    """The gpu4pyscf version of a PySCF mean-field object (``mf.to_gpu()``, PySCF >= 2.5)."""
    return mf.to_gpu()


def _to_numpy(x):
    """cupy -> numpy (no-op for numpy arrays)."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


DEVICES = ("auto", "cpu", "gpu")


class WarmState(NamedTuple):
    """Converged occupied orbitals of the last configuration of a chain (numpy, picklable).

    mo_coeff: (nao, nocc) (restricted), (2, ...) unrestricted, one more leading k axis for
    k-point meshes (lists of per-k arrays are kept as object arrays / lists). mo_occ matches.
    """

    mo_coeff: Any
    mo_occ: Any

    @classmethod
    def from_mf(cls, mf, unrestricted: bool = False) -> "WarmState":
        def occupied(c, o):
            c, o = _to_numpy(c), _to_numpy(o)
            keep = o > 1e-10
            return c[:, keep], o[keep]

        def per_k(c, o):
            if isinstance(o, np.ndarray) and o.ndim == 1:
                return occupied(c, o)
            pairs = [occupied(ck, ok) for ck, ok in zip(c, o)]
            return [p[0] for p in pairs], [p[1] for p in pairs]

        if unrestricted:
            a, b = per_k(mf.mo_coeff[0], mf.mo_occ[0]), per_k(mf.mo_coeff[1], mf.mo_occ[1])
            return cls([a[0], b[0]], [a[1], b[1]])
        return cls(*per_k(mf.mo_coeff, mf.mo_occ))


def project_occupied(c_occ: np.ndarray, occ: np.ndarray, s_new: np.ndarray) -> np.ndarray:
    """Density matrix from occupied orbitals carried to a new geometry.

    The AO coefficients of the previous geometry are kept (the basis functions move with their
    atoms) and re-orthonormalised symmetrically (Loewdin) in the new overlap S':
    C' = C (C^H S' C)^(-1/2), D' = C' diag(occ) C'^H. Then Tr(D' S') = sum(occ) and D' is
    idempotent in the S' metric, unlike the raw previous D.

    Args:
        c_occ: (nao, nocc) coefficients; occ: (nocc,) occupations; s_new: (nao, nao) overlap.
    Returns:
        (nao, nao) density matrix.
    """
    m = c_occ.conj().T @ s_new @ c_occ
    w, v = np.linalg.eigh(m)
    c_new = c_occ @ (v * w ** -0.5) @ v.conj().T
    return (c_new * occ) @ c_new.conj().T


def _initial_guess(start, mf, unrestricted: bool = False):
    """dm0 for mf.kernel from None / a WarmState / a plain density matrix (None if it does not fit)."""
    if start is None:
        return None
    if not isinstance(start, WarmState):
        nao = mf.mol.nao_nr()
        return start if np.shape(start)[-2:] == (nao, nao) else None
    s = _to_numpy(mf.get_ovlp())

    def block(c, o):
        if not isinstance(o, list):
            return project_occupied(np.asarray(c), np.asarray(o), s)
        if s.ndim != 3 or len(o) != len(s):  # k-point mesh changed
            raise ValueError
        return np.array([project_occupied(np.asarray(ck), np.asarray(ok), sk) for ck, ok, sk in zip(c, o, s)])

    try:
        if unrestricted:
            if len(start.mo_occ) != 2:
                return None
            dm = np.array([block(start.mo_coeff[0], start.mo_occ[0]), block(start.mo_coeff[1], start.mo_occ[1])])
        else:
            dm = block(start.mo_coeff, start.mo_occ)
    except (ValueError, np.linalg.LinAlgError, IndexError):
        return None
    nao = mf.mol.nao_nr()
    return dm if dm.shape[-2:] == (nao, nao) else None


class PySCFTarget(SingleEvaluationTarget):
    """PySCF Kohn-Sham DFT energies (eV) of a batch of ase.Atoms.

    Args:
        xc: libxc functional name or preset ('pbe', 'r2scan', 'hse06').
        basis: Gaussian basis (e.g. 'sto-3g', 'def2-svp', 'gth-szv' for periodic).
        pseudo: pseudopotential (periodic default 'gth-pbe'), or None (all-electron).
        kpts: k-point mesh (3,) for periodic cells, None = gamma point.
        charge, spin: total charge and 2S (spin=0 with restricted KS).
        smearing: Fermi smearing width in Ha for periodic cells, or None.
        density_fit: density fitting for molecules.
        conv_tol: SCF energy tolerance, Ha.
        max_cycle: SCF iteration cap.
        grids_level: molecular DFT grid level.
        ke_cutoff_Ha: plane-wave kinetic energy cutoff for periodic cells, Ha.
        multigrid: use multigrid numint for periodic LDA/GGA.
        compute_forces: also compute forces (eV/A).
        compute_stress: also compute the stress of a periodic cell (eV/A^3, ASE sign and Voigt
            order xx, yy, zz, yz, xz, xy: sigma = (1/V) dE/d(strain)), from PySCF's analytic
            strain derivatives (``pyscf.pbc.grad.rks_stress`` / ``krks_stress``). PySCF has them
            for LDA/GGA/meta-GGA with FFTDF and the k-point code only (a gamma-only cell then
            runs as KRKS with the single k-point 0, same energy): hybrids, multigrid and
            smearing are refused here with a ValueError, molecules at evaluation time.
        warm_start: start each chain's configuration from the orbitals of its previous one.
        threads: pyscf lib.num_threads per evaluation (None = leave as is).
        device: 'auto' (gpu4pyscf when it imports and a CUDA device is visible, else CPU PySCF),
            'cpu', or 'gpu' (error when no GPU/gpu4pyscf). Resolved where the evaluation runs
            (a dispatch worker on a GPU node uses its GPU). Not part of ``settings()``: both
            backends compute the same quantity.
    """

    def __init__(self, xc: str = "pbe", basis: str = "sto-3g", pseudo: str | None = None, kpts=None,
                 charge: int = 0, spin: int = 0, smearing: float | None = None, density_fit: bool = False,
                 conv_tol: float = 1e-9, max_cycle: int = 100, grids_level: int = 3, ke_cutoff_Ha: float = 200.0,
                 multigrid: bool = False, compute_forces: bool = False, warm_start: bool = True,
                 threads: int | None = None, device: str = "auto", compute_stress: bool = False):
        self.xc = check_xc(xc)
        self.basis = basis
        self.pseudo = pseudo
        self.kpts = None if kpts is None else tuple(int(k) for k in kpts)
        self.charge, self.spin = int(charge), int(spin)
        self.smearing = smearing
        self.density_fit = density_fit
        self.conv_tol, self.max_cycle, self.grids_level = conv_tol, max_cycle, grids_level
        self.ke_cutoff_Ha, self.multigrid = ke_cutoff_Ha, multigrid
        self.compute_forces, self.warm_start, self.threads = compute_forces, warm_start, threads
        self.compute_stress = bool(compute_stress)
        if self.compute_stress:
            check_stress_available(self.xc, multigrid, smearing)
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
        self.device = device

    def use_gpu(self) -> bool:
        """Whether evaluations in this process run on gpu4pyscf (see ``device``)."""
        if self.device == "cpu":
            return False
        ok = gpu_available()
        if self.device == "gpu" and not ok:
            raise ValueError("device='gpu' but gpu4pyscf/cupy or a CUDA device is not available; use device='auto' or 'cpu'")
        return ok

    @property
    def periodic(self) -> bool | None:
        """True when a setting only a periodic cell has is given (kpts, compute_stress, multigrid);
        else None: molecular or periodic as each configuration's pbc says
        (``targets.base.declared_periodic``)."""
        return True if (self.kpts is not None or self.compute_stress or self.multigrid) else None

    @classmethod
    def preset(cls, name: str, **kwargs) -> "PySCFTarget":
        """PySCFTarget with a named functional preset ('pbe', 'r2scan', 'hse06')."""
        if name.lower() not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(xc=PRESETS[name.lower()], **kwargs)

    def settings(self) -> dict:
        """All settings that determine the result (used for store keys and error reports).

        compute_forces / compute_stress are not part of it: they add quantities to a result,
        they do not change the energy (the store checks that a cached result has them).
        """
        return {"method": "pyscf-rks" if self.spin == 0 else "pyscf-uks", "xc": self.xc, "basis": self.basis,
                "pseudo": self.pseudo, "kpts": self.kpts, "charge": self.charge, "spin": self.spin,
                "smearing": self.smearing, "density_fit": self.density_fit, "conv_tol": self.conv_tol,
                "grids_level": self.grids_level, "ke_cutoff_Ha": self.ke_cutoff_Ha, "multigrid": self.multigrid}

    # ---- building ----
    def build_mol(self, atoms):
        """pyscf Mole (no pbc) or pbc Cell for atoms; ValueError for bad input."""
        check_atoms(atoms)
        periodic = bool(np.any(atoms.get_pbc()))
        geom = [(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.get_positions())]
        if periodic:
            from pyscf.pbc import gto as pgto

            if not np.all(atoms.get_pbc()):
                raise ValueError("mixed periodicity is not supported: pbc must be all True or all False")
            mol = pgto.Cell()
            mol.a = np.asarray(atoms.get_cell())
            mol.pseudo = self.pseudo or "gth-pbe"
            mol.ke_cutoff = self.ke_cutoff_Ha
        else:
            from pyscf import gto

            mol = gto.Mole()
        mol.atom = geom
        mol.unit = "Angstrom"
        mol.basis = self.basis
        mol.charge, mol.spin = self.charge, self.spin
        mol.verbose = 0
        n_el = int(atoms.get_atomic_numbers().sum()) - self.charge  # core electrons come in pairs
        if (n_el - self.spin) % 2 == 1:
            raise ValueError(f"odd electron count ({n_el}) with spin={self.spin} "
                             f"({'restricted KS' if self.spin == 0 else 'inconsistent 2S'}): set spin")
        try:
            mol.build()
        except (KeyError, RuntimeError, ValueError) as err:
            raise ValueError(f"cannot build {self.basis!r}/{mol.pseudo if periodic else ''} for "
                             f"{atoms.get_chemical_formula()}: {err}") from None
        nbas_atom = np.bincount(mol._bas[:, 0], minlength=mol.natm)
        missing = sorted({mol.atom_symbol(i) for i in range(mol.natm) if nbas_atom[i] == 0})
        if missing:
            raise ValueError(f"basis {self.basis!r} has no functions for element(s) {missing}")
        if self.spin == 0 and mol.nelectron % 2 == 1:
            raise ValueError(f"odd electron count ({mol.nelectron}) with spin=0 (restricted KS): set spin=1")
        return mol

    def build_mf(self, mol, gpu: bool = False, smearing: float | None = None):
        """The configured (not yet run) PySCF mean-field object for mol (see ``make_mean_field``)."""
        return make_mean_field(self, mol, gpu, smearing)

    # retry ladder: (name, attributes set on the mean-field object, start from the warm guess?)
    # "newton" (second-order SCF from the warm guess) comes second: near-degenerate frontier orbitals
    # (TiO2 in STO-3G, a 0.5 eV gap) can converge under DIIS and then fail PySCF's extra post-convergence
    # diagonalisation, |g| 1e-4 -> 6e-4, for every first-order rung (met at step 263 of a PBE MD run;
    # the shifted and damped rungs only converge more slowly to the same failure); SOSCF takes 3 cycles.
    LADDER = (("plain", {}, True),
              ("newton", {}, True),
              ("level_shift", {"level_shift": 0.3}, True),
              ("damping", {"damp": 0.5, "diis_start_cycle": 4, "level_shift": 0.2}, True),
              ("smearing", {"level_shift": 0.2}, True),  # smeared SCF, then unsmeared SCF from its density
              ("fresh_guess", {"level_shift": 0.3, "damp": 0.3, "init_guess": "minao"}, False))
    LADDER_SMEARING_HA = 0.01

    # ---- one evaluation (pure function of its inputs; used by dispatch) ----
    def evaluate_one(self, atoms, dm0=None) -> tuple[TargetResult, "WarmState"]:
        """(TargetResult, WarmState) for one configuration, warm-started from dm0 if given.

        dm0: None (cold start, minao guess), the ``WarmState`` of a previous configuration with
        the same atoms and settings (its occupied orbitals are re-orthonormalised in the new
        overlap metric, see ``project_occupied``), or a plain density matrix (used as is).

        Energy in eV, forces in eV/A. ``info``: scf_cycles (SCF iterations summed over every
        rung tried, each one Fock build + diagonalisation), wall_s, warm_start, retries, backend.
        Raises TargetEvaluationError (with the settings and the rungs tried) when every rung of
        the retry ladder fails; ValueError for bad input or unavailable gradients.
        """
        if self.threads:
            from pyscf import lib

            lib.num_threads(self.threads)
        mol = self.build_mol(atoms)
        gpu = self.use_gpu()
        t0 = time.perf_counter()
        scf = run_scf(self, mol, gpu, dm0, atoms.get_chemical_formula())
        forces = forces_eV_A(scf.mf, mol, self.settings()) if self.compute_forces else None
        stress = stress_eV_A3(scf.mf, mol, self.settings()) if self.compute_stress else None
        info = {"scf_cycles": scf.cycles, "wall_s": time.perf_counter() - t0, "warm_start": dm0 is not None,
                "retries": list(scf.rungs[1:]), "backend": "gpu4pyscf" if gpu else "pyscf"}
        return (TargetResult(energy_eV=scf.energy_Ha * Hartree, forces_eV_A=forces, stress_eV_A3=stress, info=info),
                WarmState.from_mf(scf.mf, unrestricted=self.spin != 0))


# ---- building and running the SCF: module functions of a PySCFTarget's settings ----

def check_stress_available(xc: str, multigrid: bool, smearing: float | None) -> None:
    """ValueError when PySCF has no analytic stress for these settings (hybrids, multigrid, smearing)."""
    from pyscf.dft import libxc

    why = ("a hybrid functional" if libxc.is_hybrid_xc(xc) else
           "multigrid (PySCF's stress needs FFTDF: set multigrid=False)" if multigrid else
           "smearing" if smearing else None)
    if why:
        raise ValueError(f"compute_stress=True is not available with {why} in PySCF "
                         f"(xc={xc!r}, multigrid={multigrid}, smearing={smearing})")


def make_mean_field(target: "PySCFTarget", mol, gpu: bool = False, smearing: float | None = None):
    """The configured (not yet run) PySCF mean-field object for mol under ``target``'s settings.

    Args:
        target: the PySCFTarget whose settings apply.
        mol: from ``PySCFTarget.build_mol``.
        gpu: convert to gpu4pyscf (``mf.to_gpu()``).
        smearing: Fermi smearing width in Ha overriding ``target.smearing`` (retry ladder).
    """
    sigma = target.smearing if smearing is None else smearing
    if type(mol).__name__ == "Cell":
        from pyscf.pbc import dft as pdft

        if (target.kpts is not None and np.prod(target.kpts) > 1) or target.compute_stress:
            # k-point code also at the gamma point when stress is wanted: PySCF 2.14's
            # gamma-only RKS gradients need multigrid, its stress needs FFTDF (krks_stress)
            kpts = mol.make_kpts(target.kpts or (1, 1, 1))
            mf = pdft.KRKS(mol, kpts) if target.spin == 0 else pdft.KUKS(mol, kpts)
        else:
            mf = pdft.RKS(mol) if target.spin == 0 else pdft.UKS(mol)
        if sigma:
            from pyscf.pbc.scf.addons import smearing_

            mf = smearing_(mf, sigma=sigma, method="fermi")
        if target.multigrid:
            mf = mf.multigrid_numint()
    else:
        from pyscf import dft

        mf = dft.RKS(mol) if target.spin == 0 else dft.UKS(mol)
        mf.grids.level = target.grids_level
        if target.density_fit:
            mf = mf.density_fit()
        if sigma:
            from pyscf.scf.addons import smearing_

            mf = smearing_(mf, sigma=sigma, method="fermi")
    mf.xc = target.xc
    mf.conv_tol = target.conv_tol
    mf.max_cycle = target.max_cycle
    mf.verbose = 0
    if gpu:
        mf = _to_gpu(mf)
    return mf


class SCFOutcome(NamedTuple):
    """A converged SCF: energy_Ha (Hartree), the mean-field object, the ladder rungs tried (names,
    the converged one last) and the SCF cycles summed over them."""

    energy_Ha: float
    mf: Any
    rungs: tuple[str, ...]
    cycles: int


def run_scf(target: "PySCFTarget", mol, gpu: bool, dm0, formula: str) -> SCFOutcome:
    """The SCF of ``mol`` through ``target.LADDER``: each rung in turn, from the warm guess ``dm0``
    where the rung says so, until one converges to a finite energy.

    Raises TargetEvaluationError naming ``formula``, the rungs tried and every setting (incl.
    max_cycle) when every rung fails.
    """
    cycles = [0]
    unrestricted = target.spin != 0

    def count(env):
        cycles[0] += 1

    def run(mf, start):
        mf.callback = count
        guess = _initial_guess(start, mf, unrestricted=unrestricted)
        if guess is not None and gpu:
            import cupy

            guess = cupy.asarray(guess)
        e = mf.kernel(dm0=guess)
        return float(e), bool(mf.converged)

    tried, e = [], np.nan
    for name, opts, warm in target.LADDER:
        start = dm0 if warm else None
        if name == "smearing":
            pre = make_mean_field(target, mol, gpu, smearing=max(target.LADDER_SMEARING_HA, 2 * (target.smearing or 0)))
            pre.level_shift = 0.2
            run(pre, start)
            start = _to_numpy(pre.make_rdm1())  # smeared density: a better guess for the unsmeared SCF
        mf = make_mean_field(target, mol, gpu)
        for k, v in opts.items():
            setattr(mf, k, v)
        if name == "newton":
            mf = mf.newton()
        e, converged = run(mf, start)
        tried.append(name)
        if converged and np.isfinite(e):
            return SCFOutcome(e, mf, tuple(tried), cycles[0])
    settings = target.settings() | {"max_cycle": target.max_cycle, "ladder": tried,
                                    "backend": "gpu4pyscf" if gpu else "pyscf"}
    raise TargetEvaluationError(
        f"SCF did not converge for {formula} after the retry ladder {tried} "
        f"(last energy {e} Ha); settings: {settings}", settings=settings)


def forces_eV_A(mf, mol, settings: dict) -> np.ndarray:
    """(n_atoms, 3) forces in eV/A from PySCF's analytic gradients of a converged ``mf``
    (``settings`` names the method in the ValueError raised where PySCF has none)."""
    try:
        gm = mf.nuc_grad_method()
        if hasattr(gm, "grid_response") and type(mol).__name__ != "Cell":
            gm.grid_response = True  # exact derivative of the (grid-dependent) energy
        gm.verbose = 0
        g = _to_numpy(gm.kernel())
    except NotImplementedError as err:
        raise ValueError(f"no analytic gradients in PySCF for {settings}: {err}") from None
    return -g.reshape(-1, 3) * Hartree / Bohr


def stress_eV_A3(mf, mol, settings: dict) -> np.ndarray:
    """(6,) Voigt stress in eV/A^3 (ASE convention) from PySCF's strain derivatives of a converged ``mf``."""
    if type(mol).__name__ != "Cell":
        raise ValueError("stress requested for a molecule (no periodic cell): set compute_stress=False")
    try:
        gm = mf.nuc_grad_method()
        gm.verbose = 0
        sigma = _to_numpy(gm.get_stress())  # (1/V) dE/de_ij, Ha/Bohr^3
    except (NotImplementedError, AttributeError, AssertionError) as err:
        raise ValueError(f"PySCF has no stress tensor for {settings}: {err!r}") from None
    return full_3x3_to_voigt_6_stress(sigma) * Hartree / Bohr**3  # symmetrised (sigma + sigma^T) / 2
