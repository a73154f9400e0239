"""The paired verdict (slhmc_jax.analysis.verdict) on frame sets whose distributions are known in closed form.

A Ti-O pair whose bond length follows an AR(1) process with a chosen mean: W1 between two such
distributions of equal width is the difference of their means, so which arm is closer to the
reference is known before anything is sampled. Seeds are fixed here, before any result was seen.
"""

import numpy as np
import pytest

from slhmc_jax.analysis import run_directory as rd
from slhmc_jax.analysis.report import ReportSettings, analyze, report_dict
from slhmc_jax.analysis.report_markdown import report_markdown
from slhmc_jax.sampler.trajectory import Trajectory

SIGMA_A = 0.02  # thermal width of the bond, A
RHO = 0.8  # AR(1) coefficient: integrated autocorrelation time (1 + rho) / (1 - rho) = 9 frames


def bonds(mean_A: float, n_chains: int, n_frames: int, rng) -> Trajectory:
    """Ti at the origin, O on the x axis at an AR(1) bond length with stationary N(mean, SIGMA_A^2)."""
    d = np.empty((n_chains, n_frames))
    d[:, 0] = rng.normal(mean_A, SIGMA_A, n_chains)
    for f in range(1, n_frames):
        d[:, f] = mean_A + RHO * (d[:, f - 1] - mean_A) + np.sqrt(1 - RHO**2) * SIGMA_A * rng.normal(size=n_chains)
    positions = np.zeros((n_chains, n_frames, 2, 3))
    positions[..., 1, 0] = d
    cells = np.broadcast_to(np.eye(3) * 20.0, (n_chains, n_frames, 3, 3))
    return Trajectory(positions=positions, cells=cells, atomic_numbers=[22, 8], pbc=[False] * 3)


@pytest.fixture(scope="module")
def analysis():
    rng = np.random.default_rng(20261207)
    reference = bonds(1.650, 4, 300, rng)
    arms = [rd.Arm(name, tuple(bonds(mean, 4, 150, rng) for _ in range(3)))
            for name, mean in (("slhmc", 1.650), ("relabel", 1.660), ("foundation", 1.650))]
    run = rd.RunData(reference=reference, arms=arms, temperature_K=300.0)
    return analyze(run, ReportSettings(pairs=(("Ti", "O"),), k=1, n_bootstrap=400, seed=3))


def test_a_control_one_half_width_off_is_resolved_and_an_equal_one_is_not(analysis):
    """relabel sits 0.01 A (half a thermal width) from the reference, slhmc on it: the paired difference
    of W1 covers the closed-form 0.01 A and excludes 0. foundation has slhmc's distribution: the
    difference covers 0, and the report says "not resolved at this budget" rather than picking a side."""
    v = analysis.verdict
    relabel = v.differences["relabel-slhmc"]["nn_Ti-O_A"]
    foundation = v.differences["foundation-slhmc"]["nn_Ti-O_A"]
    assert relabel.resolved and relabel.low <= 0.010 <= relabel.high and relabel.delta > 0
    assert not foundation.resolved and foundation.low <= 0.0 <= foundation.high
    assert relabel.n_replicates_candidate == relabel.n_replicates_slhmc == 3
    sentences = v.sentences()
    assert any("slhmc is closer to the target's distribution than relabel" in s for s in sentences)
    assert any("slhmc vs foundation is not resolved at this budget" in s for s in sentences)


def test_the_report_opens_with_the_verdict_and_reports_it_in_json(analysis):
    md = report_markdown(analysis).splitlines()
    assert md[2].startswith("nn_Ti-O_A: ")  # right after the title: the verdict, before warnings and tables
    out = report_dict(analysis)
    delta, low, high = out["comparison"]["relabel-slhmc"]["nn_Ti-O_A"]
    assert low <= delta <= high and out["comparison_details"]["relabel-slhmc"]["nn_Ti-O_A"]["resolved"]
    assert out["arms"]["relabel"]["replicates"] == 3 and out["verdict"] == analysis.verdict.sentences()
