"""The workflow's target reference: an SLHMC run of its own, never trained on, sized by ESS.

The slhmc arm's final model proposes, the target judges (energies only: the reference needs no
forces), the chains start from the config's start structure with a seed of their own, and the
target results go to a label store of their own (``reference/labels.sqlite``), so that no frame of
the reference can be in a training set by construction (the workflow's tests check it by store key).

Sizing: the run records ``chunk_steps`` steps per chain, then the effective sample size
(:func:`slhmc_jax.analysis.diagnostics.chain_statistics`, bulk ESS over all chains) of every
evaluation observable: each pair's per-frame mean nearest-neighbour distance and the target
energy. While one is short of ``min_ess`` and fewer than ``max_steps`` steps are recorded, the same
chains continue (the sampler's checkpoint lets ``n_steps`` grow) ``chunk_steps`` further.

Resumable: the step count being run is written to ``reference/extent.json`` before the sampler
starts it, so a killed run resumes the same chains to the same length and takes the same decisions
(the ESS is a function of the recorded frames), and every target result already stored is reused.
Done: ``reference/samples.npz`` (written last), ``trace.npz`` and ``ess.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from slhmc_jax.analysis import run_directory as rd
from slhmc_jax.analysis.replicates import ENERGY, chain_observables, frame_means
from slhmc_jax.files import write_json
from slhmc_jax.sampler.trajectory import Trajectory


class ReferenceRun(NamedTuple):
    """The reference's frames, traces and sizing.

    Attributes:
        frames: the production frames (n_chains, n_steps).
        trace: their sampler traces.
        ess: {observable: bulk ESS over all chains, or None where no estimate is possible}.
        min_ess: the ESS asked for.
        short_of_min_ess: the observables whose ESS is below ``min_ess`` (or not estimable).
    """

    frames: Trajectory
    trace: rd.SamplerTrace
    ess: dict
    min_ess: float
    short_of_min_ess: list

    @property
    def n_steps(self) -> int:
        return int(self.frames.n_frames)

    def metadata(self) -> dict:
        """What report.json's metadata records of the reference."""
        return {"source": "independent SLHMC run (final slhmc proposal, own seed and label store)",
                "n_chains": int(self.frames.n_chains), "n_steps": self.n_steps, "min_ess": self.min_ess,
                "ess": self.ess, "short_of_min_ess": list(self.short_of_min_ess),
                "judged": self.trace.judged}  # configurations judged (a killed and resumed run: the same)


def observable_ess(frames: Trajectory, pairs, k: int) -> dict:
    """{observable: bulk ESS (all chains) or None}: each pair's per-frame mean nearest-neighbour
    distance (``nn_<a>-<b>_A``) and the target energy (``target_energy_eV``)."""
    from slhmc_jax.analysis.diagnostics import chain_statistics

    out = {}
    for name, chains in chain_observables(frames, pairs, k, energy=True).items():
        values = frame_means(chains) if name != ENERGY else np.stack(chains)
        stats = chain_statistics(values)
        out[name] = None if stats is None else round(float(stats.ess), 2)
    return out


def short_of(ess: dict, min_ess: float) -> list:
    """The observables whose ESS is below ``min_ess`` or could not be estimated."""
    return [name for name, v in ess.items() if v is None or v < min_ess]


def load(directory: Path, min_ess: float) -> ReferenceRun | None:
    """The finished reference run in ``directory``, or None."""
    if not (directory / "samples.npz").exists():
        return None
    ess = json.loads((directory / "ess.json").read_text())
    return ReferenceRun(Trajectory.load(directory / "samples.npz"), rd.read_trace(directory / "trace.npz"), ess,
                        min_ess, short_of(ess, min_ess))


def sample_reference(directory: Path, run_sampler: Callable[[int], object], config, pairs, k: int,
                     log: Callable[[str], None] = print) -> ReferenceRun:
    """Run (or resume, or read back) the reference in ``directory``.

    Args:
        directory: ``RUN_DIR/reference``.
        run_sampler: n_steps -> :class:`slhmc_jax.SampleResult` of the reference chains run (or
            resumed from their checkpoint) to ``n_steps`` recorded steps.
        config: the [reference] table (:class:`slhmc_jax.app.config.ReferenceConfig`).
        pairs, k: the [evaluation] pairs and neighbours per atom.
        log: progress lines.
    """
    done = load(directory, config.min_ess)
    if done is not None:
        return done
    directory.mkdir(parents=True, exist_ok=True)
    extent = directory / "extent.json"
    n_steps = json.loads(extent.read_text())["n_steps"] if extent.exists() else config.chunk_steps
    while True:
        write_json(extent, {"n_steps": n_steps})
        frames, trace = rd.reference_from_sample(run_sampler(n_steps))
        ess = observable_ess(frames, pairs, k)
        short = short_of(ess, config.min_ess)
        log(f"reference: {frames.n_chains} chains x {n_steps} steps, ESS " +
            ", ".join(f"{n} {'-' if v is None else f'{v:.0f}'}" for n, v in ess.items()) + f" (want {config.min_ess:g})")
        if not short or n_steps >= config.max_steps:
            break
        n_steps = min(n_steps + config.chunk_steps, config.max_steps)
    if short:
        log(f"reference: short of {config.min_ess:g} effective draws at max_steps = {config.max_steps}: {', '.join(short)}")
    write_json(directory / "ess.json", ess)
    rd.write_trace(directory / "trace.npz", trace)
    frames.save(directory / "samples.npz")  # written last: the phase is complete
    return ReferenceRun(frames, trace, ess, config.min_ess, short)
