"""slhmc_jax.targets.judge: one batched query per step, the label store, isolation of failures, counting."""

import numpy as np
import pytest
from ase import Atoms

from slhmc_jax.targets.judge import Judge
from slhmc_jax.targets.store import LabelStore
from slhmc_jax.targets import TargetEvaluationError


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Atoms("CO", positions=[[0, 0, 0], [1.1 + 0.05 * rng.normal(), 0, 0]]) for _ in range(n)]


def _bond(a):
    return float(np.linalg.norm(a.positions[1] - a.positions[0]))


class Recorder:
    """A batch target function that records every batch it is called with."""

    def __init__(self, fail_above=None):
        self.batches = []
        self.fail_above = fail_above

    def __call__(self, atoms_list):
        self.batches.append(len(atoms_list))
        if self.fail_above is not None and any(_bond(a) > self.fail_above for a in atoms_list):
            raise TargetEvaluationError("no convergence")
        return [(_bond(a) - 1.1) ** 2 for a in atoms_list]


def test_duplicates_cost_one_call_and_the_store_answers_repeats(tmp_path):
    f = Recorder()
    judge = Judge(f, tmp_path / "s.sqlite")
    configs = _batch(3)
    v = judge([configs[0]] * 4 + configs[1:], [0, 1, 2, 3, 4, 5])
    assert f.batches == [3] and judge.target_evaluations == 3  # four copies of one configuration: one evaluation
    np.testing.assert_array_equal(v.energies_eV[:4], v.energies_eV[0])
    assert len(set(v.keys[:4])) == 1 and not v.failed.any()
    again = Judge(Recorder(), LabelStore(tmp_path / "s.sqlite"))  # a new process view of the same store
    v2 = again(configs[::-1], [0, 1, 2])
    assert again.target_evaluations == 0 and again.store_hits == 3
    np.testing.assert_array_equal(v2.energies_eV, v.energies_eV[[5, 4, 0]])
    np.testing.assert_array_equal(v2.keys, v.keys[[5, 4, 0]])


def test_a_batch_that_fails_anonymously_is_isolated_to_its_configuration(tmp_path):
    configs = _batch(6, seed=1)
    bonds = np.array([_bond(a) for a in configs])
    threshold = np.sort(bonds)[-2]  # the longest bond fails
    f = Recorder(fail_above=threshold)
    judge = Judge(f, tmp_path / "s.sqlite", on_failure="reject", max_retries=1)
    v = judge(configs, list(range(6)))
    bad = bonds > threshold
    np.testing.assert_array_equal(v.failed, bad)
    assert np.all(np.isinf(v.energies_eV[bad])) and np.all(np.isfinite(v.energies_eV[~bad]))
    np.testing.assert_allclose(v.energies_eV[~bad], (bonds[~bad] - 1.1) ** 2)
    assert judge.n_failed == 1 and judge.target_evaluations == 5
    assert len(LabelStore(tmp_path / "s.sqlite")) == 5  # the failed configuration is not stored
    with pytest.raises(TargetEvaluationError):
        Judge(Recorder(fail_above=threshold), None, on_failure="raise")(configs, list(range(6)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        Judge(Recorder(), labels="stress")
    with pytest.raises(ValueError, match="on_failure"):
        Judge(Recorder(), on_failure="ignore")
    with pytest.raises(ValueError, match="energies only"):
        Judge(Recorder(), labels="forces")
    with pytest.raises(TypeError, match="target must be"):
        Judge(42)
