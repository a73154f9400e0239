"""A run interrupted mid-way and resumed from its checkpoint is bit-identical to an uninterrupted one."""

import ase
import jax.numpy as jnp
import numpy as np
import pytest

import slhmc_jax
from slhmc_jax.models.base import FunctionPotential

X0 = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0]])
PROPOSAL = FunctionPotential(lambda x, c, z: 2.0 * (jnp.linalg.norm(x[1] - x[0]) - 1.2) ** 2)


class Boom(Exception):
    pass


def _target(fail_at=None):
    calls = {"n": 0}

    def f(atoms_list):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise Boom()
        return [1.5 * (np.linalg.norm(a.positions[1] - a.positions[0]) - 1.1) ** 2 for a in atoms_list]

    return f


def _run(target, checkpoint=None):
    atoms = ase.Atoms("CO", positions=X0)
    return slhmc_jax.sample(atoms, PROPOSAL, target, temperature_K=500.0, n_chains=8, n_steps=20, trajectory_steps=5,
                            timestep_fs=1.0, seed=3, checkpoint=checkpoint, progress=False)


def test_resume_bit_identical(tmp_path):
    ref = _run(_target())
    ck = tmp_path / "run.ckpt"
    with pytest.raises(Boom):
        _run(_target(fail_at=12), checkpoint=str(ck))  # killed after 10 completed steps (call 1 is the start)
    assert ck.exists()
    resumed = _run(_target(), checkpoint=str(ck))
    assert np.array_equal(resumed.positions, ref.positions)
    assert np.array_equal(resumed.target_energies, ref.target_energies)
    assert np.array_equal(resumed.acceptance_rate, ref.acceptance_rate)
    assert 0 < ref.acceptance_rate.mean() < 1
