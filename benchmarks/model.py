"""Time MACE energy+forces in JAX against mace-torch with the same hyperparameters and weights.

Rutile TiO2 supercells of 72, 216 and 576 atoms, MACE-MP-0 hyperparameters (89 elements, random
weights), float32 and float64. Both sides get a prebuilt neighbour graph (neighbour-list time is
excluded from both) and compute E and F = -dE/dx. Prints a table and writes
``ratio_vs_mace_torch`` (mace-torch seconds / ours, per atom count, float32) with --json.
Never asserts.

Ours runs with ``--backend`` (default "auto": cuequivariance's CUDA kernels on a GPU, the e3nn-jax
path with receiver-major edge slots on a CPU). On a GPU, mace-torch runs on CUDA too, converted to
its cuequivariance kernels (``mace.cli.convert_e3nn_cueq``) when cuequivariance-torch is installed
(``--torch-cueq off`` times plain mace-torch).

    python benchmarks/model.py [--quick] [--size small|medium] [--backend auto|e3nn|cuequivariance] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform

from _timing import best_of  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

import mace  # noqa: F401  (before e3nn)
import jax
import jax.numpy as jnp
import numpy as np
import torch

import slhmc_jax  # noqa: F401
from slhmc_jax import neighbours as nl
from slhmc_jax.calculator import energy_and_forces
from slhmc_jax.models import mace as jmace
from slhmc_jax.structures import rutile

SIZES = {72: (2, 2, 3), 216: (3, 3, 4), 576: (4, 4, 6)}




def torch_device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_for_device(model, use_cueq: bool):
    """The mace-torch module on the benchmark device, with cuequivariance kernels where asked and possible."""
    device = torch_device()
    if device == "cuda" and use_cueq:
        try:
            from mace.cli.convert_e3nn_cueq import run as to_cueq

            return to_cueq(model, device="cuda", return_model=True).eval(), "mace-torch + cuequivariance (cuda)"
        except Exception as err:  # noqa: BLE001  (report and fall back; the table says which ran)
            print(f"# mace-torch cuequivariance conversion failed ({type(err).__name__}: {err}); plain mace-torch", flush=True)
    return model.to(device), f"mace-torch ({device})"


def torch_callable(model, atoms, dtype):
    """A closure running mace-torch's forward (E and F by autograd) on a prebuilt batch."""
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    z_table = utils.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    config = mace_data.config_from_atoms(atoms)
    r_max = float(model.r_max)
    graph = mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=r_max)
    loader = torch_geometric.dataloader.DataLoader(dataset=[graph], batch_size=1, shuffle=False, drop_last=False)
    batch = next(iter(loader)).to(torch_device())
    batch_dict = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in batch.to_dict().items()}

    def run():
        out = model(dict(batch_dict), compute_force=True, training=False)
        if torch_device() == "cuda":
            torch.cuda.synchronize()
        return out["energy"].detach(), out["forces"].detach()

    return run


def jax_callable(potential, atoms, dtype):
    positions = jnp.asarray(atoms.get_positions(), dtype)
    cell = jnp.asarray(np.asarray(atoms.get_cell()), dtype)
    z = jnp.asarray(atoms.get_atomic_numbers())
    # the neighbour format the model prefers (dense per-atom slots on the e3nn path), sized from
    # this structure with the neighbour list's own headroom
    dense = "auto" if potential.prefers_dense_neighbours else None
    _, nbrs = nl.allocate(np.asarray(atoms.get_positions()), np.asarray(atoms.get_cell()), (True,) * 3, potential.cutoff, 0.0,
                          max_neighbours=dense)
    fn = jax.jit(lambda p, x, c, nb: energy_and_forces(potential, p, x, c, z, nb))
    params = potential.params

    def run():
        e, f = fn(params, positions, cell, nbrs)
        return jax.block_until_ready((e, f))

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="72 and 216 atoms only, fewer repeats")
    parser.add_argument("--size", default="small", choices=["small", "medium"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--backend", default="auto", choices=["auto", "e3nn", "cuequivariance"])
    parser.add_argument("--torch-cueq", default="on", choices=["on", "off"], help="mace-torch with cuequivariance on a GPU")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args(argv)
    sizes = [72, 216] if args.quick else [72, 216, 576]
    repeats = args.repeats or (2 if args.quick else 3)

    hps = jmace.mp0_hyperparameters(args.size)
    base = jmace.build(hps, key=jax.random.PRNGKey(0), dtype=jnp.float64).with_backend(args.backend)
    backend = jmace.model.resolve_backend(args.backend)
    rows = []
    print(f"MACE-MP-0 {args.size} hyperparameters, random weights, E+F; ours: {jax.devices()[0].platform}, {backend} backend; "
          f"torch {torch.__version__} on {torch_device()}, {torch.get_num_threads()} torch threads")
    print(f"{'atoms':>6} {'dtype':>8} {'ours (s)':>10} {'mace-torch (s)':>15} {'ratio':>7}")
    for dtype_name in args.dtypes:
        jdtype = {"float32": jnp.float32, "float64": jnp.float64}[dtype_name]
        tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype_name]
        potential = base.astype(jdtype)
        model, reference = torch_for_device(jmace.to_torch(potential, dtype=tdtype), args.torch_cueq == "on")
        print(f"# reference: {reference}", flush=True)
        for n in sizes:
            atoms = rutile(repeat=SIZES[n])
            t_ours = best_of(jax_callable(potential, atoms, jdtype), repeats)
            t_torch = best_of(torch_callable(model, atoms, tdtype), repeats)
            rows.append(dict(n_atoms=n, dtype=dtype_name, ours_s=t_ours, mace_torch_s=t_torch, ratio=t_torch / t_ours,
                             reference=reference))
            print(f"{n:>6} {dtype_name:>8} {t_ours:>10.4f} {t_torch:>15.4f} {t_torch / t_ours:>7.2f}", flush=True)
    result = {
        "benchmark": "model",
        "model": f"mace-mp-0-{args.size} hyperparameters, random weights",
        "device": jax.devices()[0].device_kind,
        "backend": backend,
        "platform": platform.platform(),
        "rows": rows,
        "ratio_vs_mace_torch": {str(r["n_atoms"]): r["ratio"] for r in rows if r["dtype"] == "float32"},
    }
    print("ratio_vs_mace_torch (float32):", result["ratio_vs_mace_torch"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
