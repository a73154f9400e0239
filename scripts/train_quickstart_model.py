"""Train the quickstart's foundation model: a small MACE for the TiO2 molecule on LDA labels.

The quickstart (``slhmc run``) fine-tunes a model toward PBE, so its foundation must know another
functional: here LDA (PySCF, def2-SVP, grid level 1), the "source functional". The true MACE-MP-0
weights cannot be downloaded everywhere, so this small model ships inside the package
(``slhmc_jax/data/quickstart_tio2_lda.npz``, well under 1 MB); ``model.foundation =
"mace-mp-0-small"`` in a config is one line away.

Data: exact samples of the LDA Boltzmann distribution of TiO2 at 300 K and 900 K (SLHMC with
PySCF-LDA as the judge and a harmonic valence model as the proposal: the chain is exact whatever
the proposal), plus random distortions for coverage, each labelled with LDA energy and forces
(stored in a label store next to the output, so a rerun reuses them).

    python scripts/train_quickstart_model.py [--out slhmc_jax/data/quickstart_tio2_lda.npz] [--workers 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HYPERPARAMETERS = dict(
    atomic_numbers=(8, 22), atomic_energies_eV=(0.0, 0.0), r_max=4.5, num_bessel=6, num_polynomial_cutoff=5,
    max_ell=2, num_interactions=2, hidden_irreps="16x0e", MLP_irreps="8x0e", correlation=2, radial_MLP=(32, 32),
    avg_num_neighbors=2.0, atomic_inter_scale=1.0, atomic_inter_shift=0.0,
)


def valence_model():
    """E = k_r/2 sum (r - r0)^2 + k_a/2 (theta - theta0)^2: Ti-O 1.64 A, 20 eV/A^2; 109 deg, 2 eV/rad^2."""
    import jax.numpy as jnp

    from slhmc_jax.models import FunctionPotential

    r0, k_r, theta0, k_a = 1.64, 20.0, np.deg2rad(109.0), 2.0

    def energy(x, cell, z):
        d1, d2 = x[1] - x[0], x[2] - x[0]
        r1, r2 = jnp.linalg.norm(d1), jnp.linalg.norm(d2)
        theta = jnp.arccos(jnp.clip(jnp.dot(d1, d2) / (r1 * r2), -1 + 1e-12, 1 - 1e-12))
        return 0.5 * k_r * ((r1 - r0) ** 2 + (r2 - r0) ** 2) + 0.5 * k_a * (theta - theta0) ** 2

    return FunctionPotential(energy)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "slhmc_jax" / "data" / "quickstart_tio2_lda.npz"))
    ap.add_argument("--work", default="quickstart-model-work", help="label store, sampler checkpoints, training output")
    ap.add_argument("--workers", type=int, default=2, help="PySCF worker processes")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import jax

    import slhmc_jax
    from slhmc_jax import finetune
    from slhmc_jax.targets.dispatch import DispatchedTarget
    from slhmc_jax.models import mace
    from slhmc_jax.targets.store import LabelStore, label_forces
    from slhmc_jax.structures import molecule
    from slhmc_jax.targets import PySCFTarget

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = LabelStore(work / "labels.sqlite")
    atoms = molecule("TiO2")
    atoms.center(vacuum=6.0)
    lda = PySCFTarget("lda", basis="def2-svp", grids_level=1, conv_tol=1e-8, compute_forces=True)
    t0 = time.perf_counter()
    with DispatchedTarget(lda, max_workers=args.workers) as target:
        frames = []
        for temperature_K, seed in ((300.0, args.seed), (900.0, args.seed + 1)):
            res = slhmc_jax.sample(atoms, valence_model(), target, temperature_K=temperature_K, n_chains=4, n_steps=20,
                                   trajectory_steps=8, timestep_fs=0.5, seed=seed, warmup_steps=6, burn_in_steps=4,
                                   labels="forces", store=store, checkpoint=work / f"lda_{temperature_K:.0f}K.ckpt")
            print(f"LDA samples at {temperature_K} K: acceptance {res.acceptance_rate.mean():.2f}", flush=True)
            frames += [res.atoms_at(c, s) for s in range(res.positions.shape[1]) for c in range(res.positions.shape[0])]
        rng = np.random.default_rng(args.seed)
        distorted = []
        for _ in range(40):  # broader coverage: bonds and angle off by up to ~0.15 A / 15 deg
            a = atoms.copy()
            a.positions += rng.normal(scale=0.08, size=a.positions.shape)
            distorted.append(a)
        label_forces(store, target, distorted, chains=list(range(len(distorted))))
        frames += distorted
    print(f"labels: {len(store)} LDA results in {time.perf_counter() - t0:.0f} s", flush=True)

    from ase.calculators.singlepoint import SinglePointCalculator

    settings_key = PySCFTarget("lda", basis="def2-svp", grids_level=1, conv_tol=1e-8, compute_forces=True).settings()
    train, seen = [], set()
    for a in frames:
        r = store.get(a, settings_key)
        key = a.positions.round(8).tobytes()
        if r is None or r.forces_eV_A is None or key in seen:
            continue
        seen.add(key)
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=r.energy_eV, forces=r.forces_eV_A)
        train.append(b)
    model = mace.build(mace.MACEHyperparameters(**HYPERPARAMETERS), key=jax.random.PRNGKey(args.seed))
    settings = finetune.FinetuneSettings(epochs=args.epochs, batch_size=8, learning_rate=5e-3, forces_weight=100.0,
                                         valid_fraction=0.15, early_stopping_patience=40, ema_decay=0.99,
                                         output_dir=str(work / "training"), resume=True, seed=args.seed, edge_slots=False)
    result = finetune.finetune(model, train, settings=settings)
    best = result.history[result.best_epoch]
    print(f"trained on {len(train)} configurations: validation force RMSE {best.valid_forces_rmse_eV_A:.4f} eV/A, "
          f"energy RMSE {best.valid_energy_rmse_eV_atom * 1000:.2f} meV/atom (epoch {result.best_epoch})", flush=True)
    mace.save(result.potential, args.out)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
