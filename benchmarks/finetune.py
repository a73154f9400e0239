"""Fine-tuning throughput and accuracy: slhmc_jax.finetune against mace-torch's own trainer.

Same model (a random-weight MACE with the MACE-MP-0 small hyperparameters, Al and Cu, E0 refitted
once by our least squares so both sides start from identical weights), same data (EMT labels of
8- and 16-atom Cu/Al cells sampled by ASE Langevin MD at 300 K and 1200 K), same batch size,
epochs, loss (energy weight 1, force weight 100, MSE), optimizer (Adam, constant learning rate:
torch.optim.Adam and optax.scale_by_adam apply the same update; their AMSGrad variants differ: torch
takes the maximum of the raw second moment, optax of the bias-corrected one), gradient clipping (10)
and weight EMA (0.99, torch_ema's warm-up, the same update on both sides), in one process, and the
same batches in the same order (mace-torch's loader takes our seeded batch order; ``--torch-shuffle``
lets it shuffle its own: the final validation error then varies by about +-10% with the order, e.g.
0.036-0.043 eV/A over four of our seeds against mace-torch's 0.037).
mace-torch runs ``mace.tools.train`` (the loop ``mace_run_train`` calls) on its own data loaders.
The batch-layout choice (flat graph vs vmapped slots) is measured here too.

Reported (``--json``):
- ``ratio_vs_mace_torch``: our training structures per second / mace-torch's, from the same train
  steps on the same batches (every batch of one epoch, our bucketed padding included), ours and
  mace-torch's ``take_step`` (the step its trainer runs) alternated pass by pass, best of 3 passes
  each. On a shared machine this is the number other load disturbs least: mace-torch's two OpenMP
  threads slow down up to ~10x when the cores are contended, ours ~1.5x.
- ``ratio_vs_mace_torch_best_epoch`` / ``_median_epoch`` / ``_incl_compile``: the same ratio from the
  two whole trainers (``finetune`` and ``mace.tools.train``): best or median epoch after the first
  (ours compiles in the first; validation excluded on both sides), or all epochs with our compilation.
- ``valid_force_rmse_ratio``: our validation force RMSE / mace-torch's after the same epochs (both
  final EMA models evaluated by mace-torch's calculator in float64).
- ``layouts``: seconds per train step on one batch of the flat-graph and vmapped batch layouts, with
  receiver slots or scatter-sum messages (round-robin, best of 3 rounds); the run uses the fastest.
Prints a table; never asserts.

    python benchmarks/finetune.py [--quick] [--json out.json] [--dtype float32|float64] [--epochs N]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import statistics
import tempfile
import time
import warnings

from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import mace  # noqa: F401  (before e3nn)
import jax
import jax.numpy as jnp
import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

import slhmc_jax  # noqa: F401
from slhmc_jax import finetune as ft
from slhmc_jax.models import mace as jmace

ELEMENTS = (13, 29)


def emt_dataset(n_frames: int, seed: int, temperatures=(300.0, 1200.0), repeats=((1, 1, 2), (1, 2, 2)), stride=5):
    """Cu/Al fcc cells (half Al on random sites) from Langevin MD with EMT; frames split evenly over
    temperatures and cell sizes; energy / forces / stress on SinglePointCalculators and as REF_* keys."""
    rng = np.random.default_rng(seed)
    frames = []
    per = max(1, n_frames // (len(temperatures) * len(repeats)))
    for T in temperatures:
        for rep in repeats:
            atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(rep)
            z = atoms.get_atomic_numbers()
            z[rng.permutation(len(z))[: len(z) // 2]] = 13
            atoms.set_atomic_numbers(z)
            atoms.calc = EMT()
            MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=T, friction=0.02, rng=rng)
            dyn.run(20)
            for _ in range(per):
                dyn.run(stride)
                a = atoms.copy()
                e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
                a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
                a.info["REF_energy"] = e
                a.arrays["REF_forces"] = f
                frames.append(a)
    order = rng.permutation(len(frames))
    return [frames[k] for k in order]


def settings_for(args, **kw) -> ft.FinetuneSettings:
    base = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, optimizer="adamw", weight_decay=0.0,
                schedule="constant",
                ema_decay=0.99, max_grad_norm=10.0, energy_weight=1.0, forces_weight=100.0, stress_weight=0.0, refit_e0=False,
                early_stopping_patience=None, restore_best=False, progress=False, seed=args.seed, n_buckets=3)
    base.update(kw)
    return ft.FinetuneSettings(**base)


def rates(n_structures: int, epoch_seconds) -> tuple[float, float]:
    """(best, median) structures / s over the epochs after the first (compilation or warm-up there).
    The best epoch is the least disturbed by other load on a shared machine."""
    later = list(epoch_seconds[1:]) or list(epoch_seconds)
    return n_structures / min(later), n_structures / statistics.median(later)


def measure_layouts(args, model, train, variants, rounds=3):
    """Seconds per train step on the same batch for each layout: all variants compiled first, then
    ``rounds`` round-robin passes (2 steps each), the best pass per variant (drift in the machine's
    load hits every variant alike)."""
    from slhmc_jax.finetune import batching, model as model_mod, step as step_mod, strategies
    from slhmc_jax.finetune.loss import LossConfig
    from slhmc_jax.finetune.optim import OptimizerConfig

    settings = settings_for(args)
    structures = ft.read_structures(train[: args.batch_size])
    graphs = batching.build_graphs(structures, model.species_table.lookup, model.cutoff)
    k = max(g.max_in_degree() for g in graphs)
    split = strategies.make_split(model.params, "naive")
    trainable, frozen = strategies.partition(split, model.params)
    runners, compile_s = {}, {}
    for layout, slots in variants:
        key = f"{layout}+{'slots' if slots else 'scatter'}"
        spec = step_mod.StepSpec(model_mod.as_model(model, k if slots else None), split, LossConfig.from_settings(settings),
                                 OptimizerConfig.from_settings(settings, 8), layout, False)
        _, batch = batching.assemble(graphs, batching.plan_buckets(graphs, args.batch_size, 1, layout), np.dtype(model.dtype))
        train_step = step_mod.make_train_step(spec)
        state = step_mod.init_state(spec, trainable)
        t = time.perf_counter()
        jax.block_until_ready(train_step(state, frozen, batch))
        compile_s[key] = time.perf_counter() - t

        def run(train_step=train_step, state=state, batch=batch):
            s1, _ = train_step(state, frozen, batch)
            jax.block_until_ready(train_step(s1, frozen, batch))

        runners[key] = run
    times = {key: [] for key in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            times[key].append(best_of(run, 1) / 2)
    out = {}
    for key in runners:
        seconds = min(times[key])
        out[key] = {"step_s": seconds, "structures_per_s": args.batch_size / seconds, "first_call_s": compile_s[key],
                    "step_s_rounds": times[key]}
        print(f"# layout {key:14s} {1e3 * seconds:8.1f} ms/step ({out[key]['structures_per_s']:6.2f} structures/s), "
              f"first call (compile) {compile_s[key]:5.1f} s", flush=True)
    return out


def run_ours(args, model, train, valid, layout, slots):
    t = time.perf_counter()
    r = ft.finetune(model, train, valid, settings=settings_for(args, batch_layout=layout, edge_slots=slots))
    wall = time.perf_counter() - t
    train_s = sum(h.train_wall_s for h in r.history[1:])
    epochs = [h.train_wall_s for h in r.history[1:]]
    print(f"# ours: epoch train seconds {[round(t, 2) for t in epochs]}, {r.compiled_shapes} batch shapes", flush=True)
    best, median = rates(len(train), epochs)
    return r.potential, {
        "structures_per_s": best,
        "structures_per_s_median": median,
        "structures_per_s_incl_compile": len(train) * args.epochs / train_s,
        "epoch_train_s": [h.train_wall_s for h in r.history[1:]],
        "wall_s": wall,
        "compiled_shapes": r.compiled_shapes,
        "valid_force_rmse_eV_A_per_epoch": [h.valid_forces_rmse_eV_A for h in r.history],
    }


class OurBatchOrder:
    """A torch batch sampler yielding slhmc_jax.finetune's batches of epoch 1, 2, ... (one per iteration)."""

    def __init__(self, n_train: int, args):
        self.n_train, self.args, self.epoch = n_train, args, 0

    def __iter__(self):
        from slhmc_jax.finetune.batching import epoch_batches

        self.epoch += 1
        for indices, _ in epoch_batches(self.n_train, self.args.batch_size, self.args.seed, self.epoch):
            yield [int(i) for i in indices]

    def __len__(self):
        return math.ceil(self.n_train / self.args.batch_size)


def run_mace_torch(args, model, train, valid, dtype):
    """mace-torch's trainer (mace.tools.train) on the same model, data and optimisation settings."""
    from mace import data as mdata
    from mace import tools
    from mace.modules.loss import WeightedEnergyForcesLoss
    from mace.tools import torch_geometric
    from torch_ema import ExponentialMovingAverage

    train_mod = importlib.import_module("mace.tools.train")  # the module (mace.tools.train is also the function)
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    torch.set_default_dtype(torch_dtype)
    torch.manual_seed(args.seed)
    module = jmace.to_torch(model, dtype=torch_dtype)
    module.train()
    z_table = tools.AtomicNumberTable(list(ELEMENTS))
    keys = mdata.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})

    def graphs(frames):
        return [mdata.AtomicData.from_config(mdata.config_from_atoms(a, key_specification=keys), z_table=z_table, cutoff=6.0)
                for a in frames]

    if args.torch_shuffle:
        train_loader = torch_geometric.dataloader.DataLoader(graphs(train), batch_size=args.batch_size, shuffle=True,
                                                             drop_last=False)
    else:  # our seeded batch order, epoch by epoch: the two runs differ only by their implementations
        train_loader = torch_geometric.dataloader.DataLoader(graphs(train), batch_sampler=OurBatchOrder(len(train), args))
    valid_loader = torch_geometric.dataloader.DataLoader(graphs(valid), batch_size=args.batch_size, shuffle=False, drop_last=False)
    loss_fn = WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0)
    optimizer = torch.optim.Adam(module.parameters(), lr=args.lr, amsgrad=False, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.8, patience=10**6)
    ema = ExponentialMovingAverage(module.parameters(), decay=0.99)
    epoch_times = []
    original = train_mod.train_one_epoch

    def timed(*a, **kw):
        t = time.perf_counter()
        original(*a, **kw)
        epoch_times.append(time.perf_counter() - t)

    train_mod.train_one_epoch = timed
    t = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            train_mod.train(
                model=module, loss_fn=loss_fn, train_loader=train_loader, valid_loaders={"valid": valid_loader},
                optimizer=optimizer, lr_scheduler=scheduler, start_epoch=0, max_num_epochs=args.epochs, patience=10**6,
                checkpoint_handler=tools.CheckpointHandler(directory=tmp, tag="bench", keep=False),
                logger=tools.MetricsLogger(directory=tmp, tag="bench"), eval_interval=1,
                output_args={"energy": True, "forces": True, "virials": False, "stress": False, "dipoles": False},
                device=torch.device("cpu"), log_errors="PerAtomRMSE", ema=ema, max_grad_norm=10.0)
    finally:
        train_mod.train_one_epoch = original
        torch.set_default_dtype(torch.float64)
    wall = time.perf_counter() - t
    with ema.average_parameters():
        final = jmace.from_torch(module, dtype=jnp.float64)
    print(f"# mace-torch: epoch train seconds {[round(t, 2) for t in epoch_times]}", flush=True)
    best, median = rates(len(train), epoch_times)
    return final, {
        "structures_per_s": best,
        "structures_per_s_median": median,
        "structures_per_s_incl_compile": len(train) * len(epoch_times) / sum(epoch_times),
        "epoch_train_s": epoch_times,
        "wall_s": wall,
    }


def compare_steps(args, model, train, layout, slots, n_batches=4, repeats=3):
    """Train steps on the same batches, ours and mace-torch's ``take_step`` (the step its trainer
    runs), alternated ``repeats`` times; the best pass of each (after a warm-up / compiling pass)."""
    from mace import data as mdata
    from mace import tools
    from mace.modules.loss import WeightedEnergyForcesLoss
    from mace.tools.torch_geometric.batch import Batch
    from torch_ema import ExponentialMovingAverage

    from slhmc_jax.finetune import batching, model as model_mod, step as step_mod, strategies
    from slhmc_jax.finetune.loss import LossConfig
    from slhmc_jax.finetune.optim import OptimizerConfig

    train_mod = importlib.import_module("mace.tools.train")
    b = args.batch_size
    chunks = [train[k * b:(k + 1) * b] for k in range(min(n_batches, len(train) // b))]
    settings = settings_for(args)
    graphs = batching.build_graphs(ft.read_structures(train), model.species_table.lookup, model.cutoff)
    k_max = max(g.max_in_degree() for g in graphs)
    ours_batches = [graphs[k * b:(k + 1) * b] for k in range(len(chunks))]
    buckets = batching.plan_buckets(graphs, b, settings.n_buckets, layout, train_batches=ours_batches)
    split = strategies.make_split(model.params, "naive")
    trainable, frozen = strategies.partition(split, model.params)
    spec = step_mod.StepSpec(model_mod.as_model(model, k_max if slots else None), split, LossConfig.from_settings(settings),
                             OptimizerConfig.from_settings(settings, len(chunks)), layout, False)
    arrays = [batching.assemble(g, buckets, np.dtype(model.dtype))[1] for g in ours_batches]
    train_step = step_mod.make_train_step(spec)
    state = [step_mod.init_state(spec, trainable)]

    def ours_pass():
        for batch in arrays:
            state[0], _ = train_step(state[0], frozen, batch)
        jax.block_until_ready(state[0])

    torch_dtype = torch.float32 if model.dtype == jnp.float32 else torch.float64
    torch.set_default_dtype(torch_dtype)
    module = jmace.to_torch(model, dtype=torch_dtype)
    module.train()
    z_table = tools.AtomicNumberTable(list(ELEMENTS))
    keys = mdata.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
    torch_batches = [Batch.from_data_list([mdata.AtomicData.from_config(mdata.config_from_atoms(a, key_specification=keys),
                                                                        z_table=z_table, cutoff=6.0) for a in c]) for c in chunks]
    loss_fn = WeightedEnergyForcesLoss(energy_weight=1.0, forces_weight=100.0)
    optimizer = torch.optim.Adam(module.parameters(), lr=args.lr, amsgrad=False)
    ema = ExponentialMovingAverage(module.parameters(), decay=0.99)
    output_args = {"energy": True, "forces": True, "virials": False, "stress": False, "dipoles": False}

    def theirs_pass():
        for batch in torch_batches:
            train_mod.take_step(model=module, loss_fn=loss_fn, batch=batch, optimizer=optimizer, ema=ema,
                                output_args=output_args, max_grad_norm=10.0, device=torch.device("cpu"))

    ours_pass()
    theirs_pass()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ours_pass()
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs_pass()
        t_theirs.append(time.perf_counter() - t)
    torch.set_default_dtype(torch.float64)
    n = sum(len(c) for c in chunks)
    out = {"ours_structures_per_s": n / min(t_ours), "mace_torch_structures_per_s": n / min(t_theirs),
           "ours_pass_s": t_ours, "mace_torch_pass_s": t_theirs, "structures_per_pass": n}
    out["ratio"] = out["ours_structures_per_s"] / out["mace_torch_structures_per_s"]
    print(f"# interleaved train steps ({n} structures per pass, best of {repeats}): ours "
          f"{out['ours_structures_per_s']:.2f}, mace-torch {out['mace_torch_structures_per_s']:.2f} structures/s "
          f"-> {out['ratio']:.2f}x", flush=True)
    return out


def valid_force_rmse(potential, valid) -> float:
    """Validation force RMSE, eV/A, by mace-torch's calculator in float64 (the same evaluator for both)."""
    from mace.calculators import MACECalculator

    calc = MACECalculator(models=jmace.to_torch(potential.astype(jnp.float64), dtype=torch.float64), device="cpu",
                          default_dtype="float64")
    sq, n = 0.0, 0
    for a in valid:
        b = a.copy()
        b.calc = calc
        sq += float(np.sum((b.get_forces() - a.get_forces()) ** 2))
        n += 3 * len(a)
    return math.sqrt(sq / n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer structures and epochs, two layouts")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=4)
    p.add_argument("--n-train", dest="n_train", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-layouts", action="store_true")
    p.add_argument("--torch-shuffle", dest="torch_shuffle", action="store_true",
                   help="let mace-torch shuffle its own batches (default: both train on our seeded batch order)")
    args = p.parse_args(argv)
    args.epochs = args.epochs or (4 if args.quick else 10)
    n_train = args.n_train or (16 if args.quick else 32)
    n_valid = max(4, n_train // 4)
    frames = emt_dataset(n_train + n_valid, seed=args.seed)
    train, valid = frames[:n_train], frames[n_train:n_train + n_valid]
    dtype = jnp.float32 if args.dtype == "float32" else jnp.float64
    model = jmace.build(jmace.mp0_hyperparameters("small", atomic_numbers=ELEMENTS), key=jax.random.PRNGKey(args.seed), dtype=dtype)
    model = ft.refit_reference_energies(model, train, settings=settings_for(args))
    sizes = sorted({len(a) for a in frames})
    print(f"# MACE-MP-0 small hyperparameters (Al, Cu, random weights), {args.dtype}; {len(train)} train / {len(valid)} "
          f"valid EMT structures of {sizes} atoms; batch {args.batch_size}, {args.epochs} epochs; torch threads "
          f"{torch.get_num_threads()}; {platform.processor() or platform.machine()}", flush=True)

    layouts = {}
    if not args.skip_layouts:
        variants = [("flat", True), ("vmap", True)] if args.quick else [("flat", True), ("vmap", True), ("flat", False), ("vmap", False)]
        layouts = measure_layouts(args, model, train, variants)
    best = max(layouts, key=lambda k: layouts[k]["structures_per_s"]) if layouts else "flat+slots"
    layout, slots = best.split("+")[0], best.endswith("slots")

    steps = compare_steps(args, model, train, layout, slots, n_batches=len(train) // args.batch_size)
    start_rmse = valid_force_rmse(model, valid)
    ours_model, ours = run_ours(args, model, train, valid, layout, slots == True)  # noqa: E712
    print(f"# ours done: {ours['structures_per_s']:.2f} structures/s", flush=True)
    theirs_model, theirs = run_mace_torch(args, model, train, valid, args.dtype)
    print(f"# mace-torch done: {theirs['structures_per_s']:.2f} structures/s", flush=True)
    ours["valid_force_rmse_eV_A"] = valid_force_rmse(ours_model, valid)
    theirs["valid_force_rmse_eV_A"] = valid_force_rmse(theirs_model, valid)

    ratio_epochs = ours["structures_per_s"] / theirs["structures_per_s"]
    ratio = steps["ratio"]
    ratio_all = ours["structures_per_s_incl_compile"] / theirs["structures_per_s_incl_compile"]
    rmse_ratio = ours["valid_force_rmse_eV_A"] / theirs["valid_force_rmse_eV_A"]
    print()
    print(f"{'':24s} {'structures/s':>13s} {'incl. compile':>14s} {'wall s':>8s} {'valid F RMSE':>13s}")
    print(f"{'start (both)':24s} {'':>13s} {'':>14s} {'':>8s} {start_rmse:13.4f}")
    print(f"{'slhmc_jax (' + best + ')':24s} {ours['structures_per_s']:13.2f} {ours['structures_per_s_incl_compile']:14.2f} "
          f"{ours['wall_s']:8.1f} {ours['valid_force_rmse_eV_A']:13.4f}")
    print(f"{'mace-torch train':24s} {theirs['structures_per_s']:13.2f} {theirs['structures_per_s_incl_compile']:14.2f} "
          f"{theirs['wall_s']:8.1f} {theirs['valid_force_rmse_eV_A']:13.4f}")
    ratio_median = ours["structures_per_s_median"] / theirs["structures_per_s_median"]
    print(f"\nratio_vs_mace_torch (training structures/s, interleaved passes over the training set) = {ratio:.2f}   (goal >= 1.5)")
    print(f"  whole trainers: best epoch after the first {ratio_epochs:.2f}, median epoch {ratio_median:.2f}, "
          f"all epochs incl. our compilation {ratio_all:.2f}")
    print(f"valid_force_rmse_ratio (ours / mace-torch)   = {rmse_ratio:.3f}   (goal <= 1.1)")
    if args.json:
        out = {
            "ratio_vs_mace_torch": ratio,
            "ratio_vs_mace_torch_best_epoch": ratio_epochs,
            "ratio_vs_mace_torch_median_epoch": ratio_median,
            "ratio_vs_mace_torch_incl_compile": ratio_all,
            "interleaved_steps": steps,
            "valid_force_rmse_ratio": rmse_ratio,
            "reference": "mace-torch mace.tools.train (Adam, EMA 0.99, clip 10, weighted E/F loss 1/100)",
            "same_batch_order": not args.torch_shuffle, "dtype": args.dtype, "epochs": args.epochs, "batch_size": args.batch_size, "n_train": len(train),
            "n_valid": len(valid), "atoms_per_structure": sizes, "chosen_layout": best, "layouts": layouts,
            "valid_force_rmse_start_eV_A": start_rmse, "ours": ours, "mace_torch": theirs,
            "quick": args.quick, "jax": jax.__version__, "torch": torch.__version__,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
