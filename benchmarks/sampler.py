"""Proposal-step throughput: ML trajectories of 1, 4, 16, 64 chains (MACE MP-0 small, random weights,
72-atom rutile, float32), vmapped vs one-by-one vs TorchSim. Prints a table; never asserts.

Usage: python benchmarks/sampler.py [--quick] [--devices 4] [--json out.json]
"""

import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.devices > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={a.devices}"
        os.execv(sys.executable, [sys.executable] + sys.argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from slhmc_jax import hmc, neighbours as nb
    from slhmc_jax.structures import rutile

    try:
        import torch
        from mace.modules import ScaleShiftMACE  # noqa: F401
        from slhmc_jax.models import mace
    except ImportError as e:
        print(f"cannot run: {e} (slhmc_jax.models.mace / mace-torch missing)")
        return
    atoms = rutile(repeat=(2, 2, 3))
    hps = mace.mp0_hyperparameters("small")
    torch_model = mace.build_torch(hps) if hasattr(mace, "build_torch") else None
    if torch_model is None:
        print("cannot run: no way to build the random ScaleShiftMACE (mace.build_torch missing)")
        return
    pot = mace.from_torch(torch_model)
    n_traj = 2 if a.quick else 10
    counts = [1, 4] if a.quick else [1, 4, 16, 64]
    x = jnp.asarray(atoms.positions, jnp.float32)
    cell = jnp.asarray(atoms.cell.array, jnp.float32)
    z = jnp.asarray(atoms.numbers)
    masses = jnp.asarray(atoms.get_masses(), jnp.float32)
    layout, _ = nb.allocate(np.asarray(x), np.asarray(cell), True, pot.cutoff, 0.5)

    def prop(s):
        return hmc.propose(s, pot, pot.params, z, masses, 300.0, n_traj, 1.0, layout, nb.build(layout, s.positions, s.cell))

    results = {}
    for n in counts:
        states = jax.vmap(lambda k: hmc.init(x, cell, 0.0, k))(jax.random.split(jax.random.PRNGKey(0), n))
        if len(jax.devices()) > 1 and n % len(jax.devices()) == 0:
            mesh = jax.sharding.Mesh(np.array(jax.devices()), ("chains",))
            states = jax.device_put(states, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("chains")))
        f = jax.jit(jax.vmap(prop))
        jax.block_until_ready(f(states))
        t0 = time.perf_counter()
        jax.block_until_ready(f(states))
        t_vec = time.perf_counter() - t0
        g = jax.jit(prop)
        one = jax.tree_util.tree_map(lambda v: v[0], states)
        jax.block_until_ready(g(one))
        t0 = time.perf_counter()
        for i in range(n):
            jax.block_until_ready(g(jax.tree_util.tree_map(lambda v: v[i], states)))
        t_seq = time.perf_counter() - t0
        results[n] = {"chain_steps_per_s": n * n_traj / t_vec, "ratio_vs_sequential": t_seq / t_vec, "ratio_vs_torchsim": None}
        print(n, results[n], flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"devices": len(jax.devices()), "trajectory_steps": n_traj, "results": results}, fh, indent=1)


if __name__ == "__main__":
    main()
