"""PySCF DFT as an SLHMC target (molecular and periodic), with per-chain warm starts.

Energies in eV (``ase.units.Hartree``), forces in eV/A where PySCF has analytic gradients.

Warm starts: slot k of every batch is chain k. After a converged SCF the density matrix of
slot k is kept and passed as ``dm0`` for the next configuration of the same slot (when the
atoms/basis match), which cuts SCF cycles for the small displacements of an HMC step.

Failures: a non-converged SCF goes through a retry ladder (level shift, damping, smearing
for periodic cells, fresh minao guess). If every rung fails a ``TargetEvaluationError`` with
the settings is raised. What the sampler must do with it: retrying the *same* configuration
(e.g. with other SCF settings) is unbiased, because the Metropolis decision only needs the
energy of that configuration. Rejecting the proposal because the DFT failed is NOT unbiased
(it silently truncates the target distribution), so the sampler must never do that silently:
it either stops the chain with the error, or documents the restriction explicitly.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from ase.units import Bohr, Hartree

from slhmc_jax.targets.base import TargetEvaluationError, TargetResult

PRESETS = {"pbe": "PBE", "r2scan": "r2SCAN", "hse06": "HSE06", "hse": "HSE06", "lda": "LDA", "b3lyp": "B3LYP"}
MIN_DISTANCE_A = 0.5


def _check_xc(xc: str) -> str:
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


class PySCFTarget:
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
        warm_start: reuse the last density matrix of each batch slot.
        threads: pyscf lib.num_threads per evaluation (None = leave as is).
    """

    def __init__(self, xc: str = "pbe", basis: str = "sto-3g", pseudo: str | None = None, kpts=None,
                 charge: int = 0, spin: int = 0, smearing: float | None = None, density_fit: bool = False,
                 conv_tol: float = 1e-9, max_cycle: int = 100, grids_level: int = 3, ke_cutoff_Ha: float = 200.0,
                 multigrid: bool = False, compute_forces: bool = False, warm_start: bool = True,
                 threads: int | None = None):
        self.xc = _check_xc(xc)
        self.basis = basis
        self.pseudo = pseudo
        self.kpts = None if kpts is None else tuple(int(k) for k in kpts)
        self.charge, self.spin = int(charge), int(spin)
        self.smearing = smearing
        self.density_fit = density_fit
        self.conv_tol, self.max_cycle, self.grids_level = conv_tol, max_cycle, grids_level
        self.ke_cutoff_Ha, self.multigrid = ke_cutoff_Ha, multigrid
        self.compute_forces, self.warm_start, self.threads = compute_forces, warm_start, threads
        self._dm: dict[int, tuple[Any, Any]] = {}

    @classmethod
    def preset(cls, name: str, **kwargs) -> "PySCFTarget":
        """PySCFTarget with a named functional preset ('pbe', 'r2scan', 'hse06')."""
        if name.lower() not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(xc=PRESETS[name.lower()], **kwargs)

    def settings(self) -> dict:
        """All settings that determine the result (used for store keys and error reports)."""
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

    def build_mf(self, mol):
        periodic = hasattr(mol, "a") and mol.a is not None and not isinstance(mol.a, type(None))
        if periodic and getattr(mol, "dimension", 0) > 0 and type(mol).__name__ == "Cell":
            from pyscf.pbc import dft as pdft

            if self.kpts is not None and np.prod(self.kpts) > 1:
                kpts = mol.make_kpts(self.kpts)
                mf = pdft.KRKS(mol, kpts) if self.spin == 0 else pdft.KUKS(mol, kpts)
            else:
                mf = pdft.RKS(mol) if self.spin == 0 else pdft.UKS(mol)
            if self.smearing:
                from pyscf.pbc.scf.addons import smearing_

                mf = smearing_(mf, sigma=self.smearing, method="fermi")
            if self.multigrid:
                mf = mf.multigrid_numint()
        else:
            from pyscf import dft

            mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
            mf.grids.level = self.grids_level
            if self.density_fit:
                mf = mf.density_fit()
        mf.xc = self.xc
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        mf.verbose = 0
        return mf

    # ---- one evaluation (pure function of its inputs; used by dispatch) ----
    def evaluate_one(self, atoms, dm0=None) -> tuple[TargetResult, Any]:
        """(TargetResult, converged dm) for one configuration, starting from dm0 if given."""
        if self.threads:
            from pyscf import lib

            lib.num_threads(self.threads)
        mol = self.build_mol(atoms)
        t0 = time.perf_counter()
        cycles = [0]

        def cb(env):
            cycles[0] += 1

        ladder = [("plain", {}), ("level_shift", {"level_shift": 0.3}), ("damping", {"damp": 0.5, "diis_start_cycle": 4}),
                  ("fresh_guess", {"level_shift": 0.3, "damp": 0.3})]
        tried = []
        for rung, (name, opts) in enumerate(ladder):
            mf = self.build_mf(mol)
            for k, v in opts.items():
                setattr(mf, k, v)
            mf.callback = cb
            start = dm0 if (dm0 is not None and name != "fresh_guess") else None
            if start is not None and np.shape(start) != np.shape(mf.get_init_guess()):
                start = None
            e = mf.kernel(dm0=start)
            tried.append(name)
            if mf.converged and np.isfinite(e):
                break
        else:
            raise TargetEvaluationError(f"SCF did not converge for {atoms.get_chemical_formula()} after {tried}",
                                        settings=self.settings() | {"ladder": tried})
        forces = None
        if self.compute_forces:
            try:
                gm = mf.nuc_grad_method()
                if hasattr(gm, "grid_response") and type(mol).__name__ != "Cell":
                    gm.grid_response = True  # exact derivative of the (grid-dependent) energy
                gm.verbose = 0
                g = gm.kernel()
            except NotImplementedError as err:
                raise ValueError(f"no analytic gradients in PySCF for {self.settings()}: {err}") from None
            forces = -np.asarray(g).reshape(-1, 3) * Hartree / Bohr
        info = {"scf_cycles": cycles[0], "wall_s": time.perf_counter() - t0, "warm_start": dm0 is not None,
                "retries": tried[1:]}
        return TargetResult(energy_eV=float(e) * Hartree, forces_eV_A=forces, info=info), mf.make_rdm1()

    def evaluate_streaming(self, atoms_list: Sequence[Any], slots: Sequence[int] | None = None):
        """Yield (j, TargetResult) as each configuration finishes; slot slots[j] (default j) is its chain."""
        slots = list(range(len(atoms_list))) if slots is None else list(slots)
        for j, atoms in enumerate(atoms_list):
            k = slots[j]
            key = tuple(atoms.get_atomic_numbers())
            prev = self._dm.get(k, (None, None))
            dm0 = prev[1] if (self.warm_start and prev[0] == key) else None
            res, dm = self.evaluate_one(atoms, dm0)
            self._dm[k] = (key, dm)
            yield j, res

    def evaluate(self, atoms_list: Sequence[Any]) -> list[TargetResult]:
        """Evaluate sequentially; slot k reuses the dm of slot k from the previous call."""
        return [r for _, r in self.evaluate_streaming(atoms_list)]

    def __call__(self, atoms_list: Sequence[Any]) -> np.ndarray:
        return np.array([r.energy_eV for r in self.evaluate(atoms_list)], dtype=np.float64)
