"""Benchmark the target-DFT oracle: PBE on the 6-atom rutile TiO2 cell through PySCFTarget.

For each case (gamma point; 2x2x3 k-mesh) it times
- a cold start (minao guess) at the reference geometry,
- a cold start and a warm start (density matrix of the reference geometry) at a geometry
  perturbed by a typical HMC move (every coordinate + N(0, 0.02 A)),
- the same calculation done directly in PySCF (the named reference: ratio = PySCFTarget CPU / direct CPU, the
  direct run timed before and after the target's cold run and averaged),
- the LabelStore overhead (put + get of the result in an SQLite store) as a fraction of DFT time.

Settings: GTH-PBE pseudopotentials, gth-szv-molopt-sr (--quick; plain gth-szv has no Ti) or gth-dzvp-molopt-sr basis,
cell.ke_cutoff 120 Ha (--quick) or 200 Ha, multigrid numint (LDA/GGA fast path), conv_tol 1e-8 Ha.
Forces: gamma point with multigrid; on the k-mesh (FFTDF, ~2 min on 2 cores) only without --quick.
Density fitting (GDF) is not used: on these small cells its 3-centre build costs more than the
multigrid Coulomb/XC it would replace.

Usage: python benchmarks/oracle.py [--quick] [--json out.json]. Prints each case as it finishes
(the JSON is rewritten after every case); never asserts. On a 2-core CPU --quick takes ~8 min; the
full settings take well over 30 min (gamma E+F 374 s and the k-mesh energy 1148 s for their four
calculations each, before the FFTDF k-mesh forces).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _rutile():
    from slhmc_jax.structures import rutile

    return rutile(a=4.594, c=2.959, u=0.305)


def _direct_pyscf(atoms, basis, ke_cutoff, kmesh, forces, conv_tol):
    """Same calculation written directly against PySCF: (wall s, CPU s, cycles, energy Ha)."""
    from pyscf.pbc import dft as pdft
    from pyscf.pbc import gto as pgto

    t0, c0 = time.perf_counter(), time.process_time()
    cell = pgto.Cell(atom=[(s, tuple(p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                     a=np.asarray(atoms.cell), basis=basis, pseudo="gth-pbe", ke_cutoff=ke_cutoff, unit="Angstrom",
                     verbose=0).build()
    mf = pdft.KRKS(cell, cell.make_kpts(kmesh)) if kmesh else pdft.RKS(cell)
    if not (forces and kmesh):
        mf = mf.multigrid_numint()
    mf.xc, mf.conv_tol = "PBE", conv_tol
    e = mf.kernel()
    if forces:
        mf.nuc_grad_method().kernel()
    return time.perf_counter() - t0, time.process_time() - c0, mf.cycles, e


def _store_overhead(atoms, target, result, n=20):
    """Mean seconds of one LabelStore put + get (fresh key each time)."""
    from slhmc_jax.targets.store import LabelStore

    with tempfile.TemporaryDirectory() as d:
        store = LabelStore(os.path.join(d, "s.sqlite"))
        settings = target.settings()
        t0 = time.perf_counter()
        for i in range(n):
            a = atoms.copy()
            a.positions[0, 0] += 1e-6 * (i + 1)
            store.put(a, settings, result)
            assert store.get(a, settings) is not None
        return (time.perf_counter() - t0) / n


def run_case(name, kmesh, forces, basis, ke_cutoff, conv_tol, seed=0):
    from ase.units import Hartree

    from slhmc_jax.targets import PySCFTarget

    multigrid = not (forces and kmesh)  # k-point gradients only with FFTDF in PySCF
    kw = dict(basis=basis, pseudo="gth-pbe", kpts=kmesh, ke_cutoff_Ha=ke_cutoff, multigrid=multigrid,
              conv_tol=conv_tol, compute_forces=forces, device="cpu")
    x0 = _rutile()
    x1 = x0.copy()
    x1.positions += np.random.default_rng(seed).normal(scale=0.02, size=x1.positions.shape)

    cold_t = PySCFTarget("pbe", warm_start=False, **kw)
    warm_t = PySCFTarget("pbe", warm_start=True, **kw)
    r0, state0 = warm_t.evaluate_one(x0)  # cold start at the reference geometry
    # the direct reference is timed before and after the target's cold run (order and cache effects average out)
    before = _direct_pyscf(x1, basis, ke_cutoff, kmesh, forces, conv_tol)
    c0 = time.process_time()
    r1_cold = cold_t.evaluate([x1])[0]
    c1 = time.process_time()
    after = _direct_pyscf(x1, basis, ke_cutoff, kmesh, forces, conv_tol)
    c1b = time.process_time()
    r1_warm, _ = warm_t.evaluate_one(x1, state0)  # warm start from the reference geometry's orbitals
    c2 = time.process_time()
    t_direct, cpu_direct = 0.5 * (before[0] + after[0]), 0.5 * (before[1] + after[1])
    cyc_direct, e_direct = after[2], after[3]
    overhead = _store_overhead(x1, cold_t, r1_cold)
    row = {
        "case": name, "kmesh": list(kmesh) if kmesh else None, "forces": forces, "basis": basis,
        "ke_cutoff_Ha": ke_cutoff, "multigrid": multigrid, "conv_tol": conv_tol,
        "cold_ref_s": r0.info["wall_s"], "cold_ref_cycles": r0.info["scf_cycles"],
        "cold_s": r1_cold.info["wall_s"], "cold_cycles": r1_cold.info["scf_cycles"], "cold_cpu_s": c1 - c0,
        "warm_s": r1_warm.info["wall_s"], "warm_cycles": r1_warm.info["scf_cycles"], "warm_cpu_s": c2 - c1b,
        "direct_s": t_direct, "direct_cpu_s": cpu_direct, "direct_cycles": cyc_direct,
        "direct_cpu_s_before_after": [before[1], after[1]],
        "energy_eV": r1_cold.energy_eV, "warm_minus_cold_meV": 1e3 * (r1_warm.energy_eV - r1_cold.energy_eV),
        "target_minus_direct_Ha": r1_cold.energy_eV / Hartree - e_direct,
        "store_s": overhead,
    }
    row["cycle_saving"] = 1 - row["warm_cycles"] / row["cold_cycles"]
    row["ratio_to_direct"] = row["cold_cpu_s"] / row["direct_cpu_s"]  # CPU: robust to a shared machine
    row["store_fraction"] = overhead / row["warm_s"]
    if forces:
        row["max_force_eV_A"] = float(np.abs(r1_cold.forces_eV_A).max())
    return row


def print_table(rows, header=True):
    hdr = (f"{'case':<22} {'cold s':>8} {'cpu s':>7} {'cyc':>4} {'warm s':>8} {'cpu s':>7} {'cyc':>4} {'saving':>7}"
           f" {'direct s':>9} {'cpu s':>7}"
           f" {'ratio':>6} {'store ms':>9} {'store/DFT':>10}")
    if header:
        print(hdr)
        print("-" * len(hdr))
    for r in rows:
        print(f"{r['case']:<22} {r['cold_s']:8.2f} {r['cold_cpu_s']:7.2f} {r['cold_cycles']:4d} {r['warm_s']:8.2f}"
              f" {r['warm_cpu_s']:7.2f} {r['warm_cycles']:4d}"
              f" {100 * r['cycle_saving']:6.0f}% {r['direct_s']:9.2f} {r['direct_cpu_s']:7.2f} {r['ratio_to_direct']:6.2f}"
              f" {1e3 * r['store_s']:9.2f} {100 * r['store_fraction']:9.4f}%", flush=True)


def print_legend():
    print("ratio = CPU s of a PySCFTarget cold call / CPU s of the same calculation written directly in PySCF"
          " (the reference);"
          " store/DFT = LabelStore put+get / warm DFT call (goal < 1%); s = wall seconds per call,"
          " cpu s = process CPU seconds (all threads), cyc = SCF cycles; saving = 1 - warm cyc / cold cyc")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="gth-szv-molopt-sr, ke_cutoff 120 Ha, no k-mesh forces")
    ap.add_argument("--json", help="write the rows as JSON to this path")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    basis, ke = ("gth-szv-molopt-sr", 120.0) if args.quick else ("gth-dzvp-molopt-sr", 200.0)
    conv_tol = 1e-8
    cases = [("gamma E+F", None, True), ("k 2x2x3 E", (2, 2, 3), False)]
    if not args.quick:
        cases.append(("k 2x2x3 E+F (FFTDF)", (2, 2, 3), True))
    print(f"rutile TiO2 6 atoms, PBE, gth-pbe, {basis}, ke_cutoff {ke} Ha, conv_tol {conv_tol} Ha, "
          f"HMC-like move 0.02 A, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}", flush=True)
    rows = []
    for name, kmesh, forces in cases:
        t0 = time.perf_counter()
        rows.append(run_case(name, kmesh, forces, basis, ke, conv_tol))
        print(f"# {name}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        print_table(rows[-1:], header=len(rows) == 1)  # each case as it finishes (the full run takes long)
        if args.json:  # rewritten after every case: a run stopped early keeps what it measured
            with open(args.json, "w") as fh:
                json.dump({"rows": rows, "quick": args.quick, "complete": len(rows) == len(cases)}, fh, indent=2)
    print_legend()


if __name__ == "__main__":
    main()
