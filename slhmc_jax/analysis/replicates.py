"""Observables of a run's frame sets, chain by chain and replicate by replicate: the verdict's input.

The verdict (:func:`slhmc_jax.analysis.statistics.paired_distance_difference`) compares arms over
replicates (independent fine-tunings and evaluation samplings) and over the frames of each chain,
so it takes, per arm and observable, a list of replicates, each a list of chains, each an array
(n_draws,) or (n_draws, values per draw). :func:`arm_observables` gives exactly that from a
:class:`~slhmc_jax.analysis.run_directory.RunData`, :func:`chain_observables` the same for one
trajectory (the reference's).

Observable names are the report's: ``nn_<a>-<b>_A`` (the k nearest b atoms of every a atom, A;
per frame an array of n_a x k distances) and, where the frames carry target energies,
``target_energy_eV`` (one value per frame).
"""

from __future__ import annotations

import numpy as np

from slhmc_jax.analysis import observables as obs
from slhmc_jax.sampler.trajectory import Trajectory

ENERGY = "target_energy_eV"


def nn_name(a: str, b: str) -> str:
    """The report's name of the a-b nearest-neighbour distance observable (A)."""
    return f"nn_{a}-{b}_A"


def chain_observables(frames: Trajectory, pairs, k: int, *, energy: bool = False) -> dict[str, list[np.ndarray]]:
    """{observable: [per chain (n_frames, n_a * k) distances, A]} of each pair (a, b), and with
    ``energy`` the target energies {``target_energy_eV``: [per chain (n_frames,) eV]} where the
    frames carry them."""
    flat = frames.frames()
    out = {}
    for a, b in pairs:
        d = obs.nearest_neighbour_distances(flat, a, b, k)
        d = d.reshape(frames.n_chains, frames.n_frames, -1)
        out[nn_name(a, b)] = [d[c] for c in range(frames.n_chains)]
    if energy and frames.target_energies is not None:
        e = np.asarray(frames.target_energies, np.float64)
        out[ENERGY] = [e[c] for c in range(frames.n_chains)]
    return out


def frame_means(chains: list[np.ndarray]) -> np.ndarray:
    """(n_chains, n_frames): each frame's mean over its values (the per-frame mean distance)."""
    return np.stack([c.reshape(c.shape[0], -1).mean(axis=1) for c in chains])


def arm_observables(run, pairs, k: int) -> dict[str, dict[str, list[list[np.ndarray]]]]:
    """{arm: {observable: [replicate: [chain: (n_draws, n_a * k) array]]}} of every arm of ``run``
    (a :class:`~slhmc_jax.analysis.run_directory.RunData`), each replicate's own evaluation frames."""
    out = {}
    for arm in run.arms:
        per_replicate = [chain_observables(frames, pairs, k) for frames in arm.replicates]
        out[arm.name] = {name: [r[name] for r in per_replicate] for name in per_replicate[0]}
    return out


def reference_observables(run, pairs, k: int) -> dict[str, list[np.ndarray]]:
    """{observable: [chain: (n_draws, n_a * k) array]} of the reference frames of ``run``."""
    return chain_observables(run.reference, pairs, k)
