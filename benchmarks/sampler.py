"""Proposal-step throughput of the SLHMC sampler: the ML trajectories of 1, 4, 16, 64 chains.

System: 72-atom rutile TiO2 (2x2x3 cells), MACE with the MP-0 "small" hyperparameters and random
weights, float32, velocity Verlet. Three ways to run the same chains:

- ours, vmapped: ``slhmc_jax.sampler.kernels.hmc_kernel(...).propose`` (what ``sample`` calls every step: fresh
  neighbour lists, Maxwell-Boltzmann momenta, the whole trajectory of every chain in one compiled
  call; sharded over the chain axis when several devices are visible);
- ours, sequential: the same compiled function on one chain at a time, chain after chain;
- TorchSim (torch-sim-atomistic 0.3.0): batched NVE velocity Verlet with its ``MaceModel`` around
  the mace-torch module holding the same weights (``slhmc_jax.models.mace.to_torch``), the chains
  as one batched state.

Reported per chain count: ``chain_steps_per_s`` (chains x trajectory steps / wall time of ours,
vmapped), ``ratio_vs_sequential`` (vmapped throughput / sequential throughput) and
``ratio_vs_torchsim`` (ours / TorchSim's chain-steps per second). Timings exclude compilation
(one warm-up call each) and take the best of ``--repeats``. Never asserts.

Usage: python benchmarks/sampler.py [--quick] [--devices 4] [--json out.json] [--chains 1 4 16 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="chains 1, 4, 16; 2 trajectory steps; 1 repeat")
    ap.add_argument("--devices", type=int, default=1, help="simulated host devices (XLA_FLAGS) for the sharded path")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--chains", type=int, nargs="*", default=None)
    ap.add_argument("--trajectory-steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-torchsim", action="store_true")
    ap.add_argument("--flat-edges", action="store_true",
                    help="the pair-list neighbour format (MACE's scatter message sum) instead of the dense per-atom format")
    ap.add_argument("--model", choices=("mace", "nequip"), default="mace",
                    help="nequip: a stand-in JAX model (TorchSim then runs a random MACE of other weights)")
    return ap.parse_args()


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    a = _parse()
    if a.devices > 1 and f"xla_force_host_platform_device_count={a.devices}" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={a.devices}").strip()
        os.execv(sys.executable, [sys.executable] + sys.argv)
    counts = a.chains or ([1, 4, 16] if a.quick else [1, 4, 16, 64])
    n_traj = a.trajectory_steps or (2 if a.quick else 10)
    repeats = a.repeats or (1 if a.quick else 3)
    temperature_K, timestep_fs = 300.0, 1.0

    if not a.no_torchsim:
        try:
            import mace  # noqa: F401  (must precede e3nn; see DESIGN.md)
        except ImportError:
            pass
    import jax
    import jax.numpy as jnp
    import numpy as np

    from slhmc_jax.sampler import kernels as hmc
    from slhmc_jax import neighbours as nb
    from slhmc_jax.sampler.kernels import default_chain_batch_size
    from slhmc_jax.sampler.driver import shard_chains
    from slhmc_jax.structures import rutile

    atoms = rutile(repeat=(2, 2, 3))
    z_table = (8, 22)
    torch_module = None
    if a.model == "mace":
        from slhmc_jax.models import mace

        hps = mace.mp0_hyperparameters("small", atomic_numbers=z_table)
        pot = mace.build(hps, key=jax.random.PRNGKey(0), dtype=jnp.float32)
        model_name = "MACE MP-0 small (random weights)"
        if not a.no_torchsim:
            torch_module = mace.to_torch(pot)
    else:
        from slhmc_jax.models import registry

        pot = registry.build("nequip", z_table, dtype=jnp.float32, cutoff=6.0)
        model_name = "NequIP stand-in (TorchSim: other model)"
    x = jnp.asarray(atoms.positions, jnp.float32)
    cell = jnp.asarray(atoms.cell.array, jnp.float32)
    z = np.asarray(atoms.numbers)
    masses = np.asarray(atoms.get_masses())
    # the neighbour format slhmc_jax.sample picks: dense per-atom slots for a model that prefers them
    dense = "auto" if (pot.prefers_dense_neighbours and not a.flat_edges) else None
    layout, _ = nb.allocate(np.asarray(atoms.positions), np.asarray(atoms.cell.array), True, float(pot.cutoff), 0.5,
                            max_neighbours=dense)
    if layout.max_neighbours:
        model_name += f", dense neighbour format with {layout.max_neighbours} slots per atom"
    print(f"# {model_name}, {len(atoms)}-atom rutile, float32, {n_traj} VV steps of {timestep_fs} fs, "
          f"{len(jax.devices())} device(s) [{jax.devices()[0].platform}], layout {layout.method} capacity {layout.capacity}, "
          f"chains per vmapped force group {[default_chain_batch_size(n) or n for n in counts]}",
          flush=True)

    kernel = hmc.hmc_kernel(pot, z, masses, temperature_K, layout=layout)

    def states_for(n, seed=0):
        return hmc.init(jnp.broadcast_to(x, (n,) + x.shape), jnp.broadcast_to(cell, (n, 3, 3)), jnp.zeros(n), seed)

    def run(states):
        prop = kernel.propose(states, pot.params, timestep_fs, n_traj)
        jax.block_until_ready(prop.positions)
        if bool(np.any(np.asarray(prop.overflow))) or not bool(jnp.all(jnp.isfinite(prop.positions))):
            print("# WARNING: neighbour overflow or non-finite trajectory; timings below are not valid", flush=True)
        return prop

    ts_run = None
    if torch_module is not None:
        try:
            import torch
            import torch_sim as ts
            from torch_sim.models.mace import MaceModel

            ts_model = MaceModel(torch_module, device=torch.device("cpu"), dtype=torch.float32, compute_stress=False)
            dt_ts = torch.tensor(timestep_fs * 1e-3, dtype=torch.float32)  # metal units: ps
            kT_ts = torch.tensor(8.617333262e-5 * temperature_K, dtype=torch.float32)

            def ts_run(n):
                state = ts.initialize_state([atoms] * n, torch.device("cpu"), torch.float32)
                init_fn, update_fn = ts.integrators.nve(ts_model, dt=dt_ts, kT=kT_ts, seed=0)

                def go():
                    md = init_fn(state)  # momenta + the first force call, as in our proposal
                    for _ in range(n_traj):
                        md = update_fn(md)
                    return md

                return go
        except Exception as e:  # noqa: BLE001  (report, do not stop the benchmark)
            print(f"# TorchSim unavailable: {type(e).__name__}: {e}", flush=True)

    one = states_for(1)
    run(one)  # compile the one-chain shape (used for n = 1 and the sequential baseline)
    results = {}
    header = f"{'chains':>6} {'ours chain-steps/s':>19} {'sequential':>11} {'TorchSim':>9} {'ratio_vs_seq':>12} {'ratio_vs_torchsim':>17}"
    print(header, flush=True)
    for n in counts:
        states = shard_chains(states_for(n), n)
        run(states)  # compile
        t_vec = _best(lambda: run(states), repeats)
        singles = [jax.tree_util.tree_map(lambda v, i=i: v[i:i + 1], states_for(n)) for i in range(n)]
        t_seq = _best(lambda: [run(s) for s in singles], repeats)
        ours = n * n_traj / t_vec
        seq = n * n_traj / t_seq
        theirs = None
        if ts_run is not None:
            go = ts_run(n)
            go()  # first call: allocations, neighbour-list setup
            theirs = n * n_traj / _best(go, repeats)
        results[n] = {
            "chain_steps_per_s": ours,
            "sequential_chain_steps_per_s": seq,
            "torchsim_chain_steps_per_s": theirs,
            "ratio_vs_sequential": ours / seq,
            "ratio_vs_torchsim": ours / theirs if theirs else None,
            "sharded": len(jax.devices()) > 1 and n % len(jax.devices()) == 0,
            "chain_batch_size": default_chain_batch_size(n) or n,
        }
        ts_txt = f"{theirs:9.2f}" if theirs else f"{'n/a':>9}"
        rt_txt = f"{ours / theirs:17.2f}" if theirs else f"{'n/a':>17}"
        print(f"{n:6d} {ours:19.2f} {seq:11.2f} {ts_txt} {ours / seq:12.2f} {rt_txt}", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"model": model_name, "n_atoms": len(atoms), "dtype": "float32", "trajectory_steps": n_traj,
                       "timestep_fs": timestep_fs, "devices": len(jax.devices()), "platform": jax.devices()[0].platform,
                       "repeats": repeats, "reference": "torch-sim-atomistic 0.3.0 nve + MaceModel (mace-torch)",
                       "results": {str(k): v for k, v in results.items()}}, fh, indent=1)


if __name__ == "__main__":
    main()
