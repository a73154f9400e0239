"""Fine-tuning (slhmc_jax.finetune) against independent references.

References: ASE's EMT (labels of Cu/Al cells sampled by Langevin MD at two temperatures), the
project's per-structure calculator (batched predictions), mace-torch (the saved fine-tuned model),
closed forms (the loss, the least-squares E0 offsets, Lennard-Jones parameters recovered from their
own labels) and symmetry (rotated forces).

The default tests use a tiny MACE (one interaction, 8x0e+8x1o, l <= 1, scatter-sum messages) so
that a training step compiles in seconds; runs with equal settings share compiled steps. The
MACE-MP-0 small demonstrations (5x lower validation force RMSE, mace-torch round trip of a
converted model) are in the slow set (``-m slow``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import warnings

import numpy as np
import pytest

mace_torch = pytest.importorskip("mace", reason="mace-torch is part of the test extra")  # before e3nn
torch = pytest.importorskip("torch")

import ase  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402

import slhmc_jax  # noqa: E402,F401  (x64)
from slhmc_jax import finetune as ft  # noqa: E402
from slhmc_jax import testing  # noqa: E402
from slhmc_jax.finetune import batching, loss as loss_mod, model as model_mod, step as step_mod, strategies  # noqa: E402
from slhmc_jax.finetune.reference_energies import fit_reference_energies  # noqa: E402
from slhmc_jax.models import mace  # noqa: E402
from slhmc_jax.models.registry import lennard_jones_energy  # noqa: E402

ELEMENTS = (13, 29)  # Al, Cu


# ----------------------------------------------------------------------------------------
# data and models


def emt_frames(n_frames: int, *, repeat=(1, 1, 2), temperatures=(300.0, 1200.0), seed=0, stride=5):
    """Cu/Al fcc cells (half Al, random sites) from ASE Langevin MD with EMT, energies / forces /
    stress on SinglePointCalculators; ``n_frames // len(temperatures)`` frames per temperature."""
    rng = np.random.default_rng(seed)
    frames = []
    for T in temperatures:
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(repeat)
        z = atoms.get_atomic_numbers()
        z[rng.permutation(len(z))[: len(z) // 2]] = 13
        atoms.set_atomic_numbers(z)
        atoms.calc = EMT()
        MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Langevin's fixcm notice
            dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=T, friction=0.02, rng=rng)
        dyn.run(20)
        for _ in range(n_frames // len(temperatures)):
            dyn.run(stride)
            a = atoms.copy()
            a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
            frames.append(a)
    return frames


def composition_frames(seed=3):
    """Rattled 8-atom Cu/Al cells of four compositions (Cu8, Cu6Al2, Cu4Al4, Cu2Al6), EMT labels."""
    rng = np.random.default_rng(seed)
    frames = []
    for n_al in (0, 2, 4, 6):
        for _ in range(2):
            atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((1, 1, 2))
            z = atoms.get_atomic_numbers()
            z[rng.permutation(8)[:n_al]] = 13
            atoms.set_atomic_numbers(z)
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            atoms.calc = EMT()
            a = atoms.copy()
            a.calc = SinglePointCalculator(a, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                           stress=atoms.get_stress())
            frames.append(a)
    return frames


TINY = mace.mp0_hyperparameters(
    "small", atomic_numbers=ELEMENTS, atomic_energies_eV=(-0.4, -0.7), hidden_irreps="8x0e+8x1o", max_ell=1,
    correlation=2, radial_MLP=(8,), num_bessel=4, MLP_irreps="4x0e", r_max=4.5, avg_num_neighbors=20.0, num_interactions=1)

# the settings most tests share (equal settings -> shared compiled steps)
BASE = dict(epochs=30, batch_size=4, learning_rate=0.02, n_buckets=1, edge_slots=False, early_stopping_patience=None,
            progress=False)


@pytest.fixture(scope="module")
def frames():
    return emt_frames(20)


@pytest.fixture(scope="module")
def tiny():
    return mace.build(TINY, key=jax.random.PRNGKey(3), dtype=jnp.float64)


@pytest.fixture(scope="module")
def tiny_torch(tiny):
    """mace-torch's calculator on the tiny model's weights (the independent reference)."""
    return torch_calculator(tiny)


@pytest.fixture(scope="module")
def naive_run(frames, tiny, tmp_path_factory):
    """The reference run: naive strategy, 30 epochs, metrics written."""
    out = tmp_path_factory.mktemp("naive")
    before = step_mod.compiled_shapes()
    result = ft.finetune(tiny, frames[:16], frames[16:], settings=ft.FinetuneSettings(**BASE, output_dir=str(out)))
    return result, out, step_mod.compiled_shapes() - before


_predict = jax.jit(model_mod.predict_batch, static_argnums=(0, 3, 4))


def jax_predict(potential, atoms_list, params=None):
    """(energies (n,) eV, forces per structure eV/A, stress per structure eV/A^3) by ``finetune.predict``
    (the batches fine-tuning evaluates with; shapes shared with the E0 refit of the same structures)."""
    if params is not None:
        potential = potential.with_params(params)
    preds = ft.predict(potential, atoms_list, settings=ft.FinetuneSettings(**BASE))
    return np.array([p.energy_eV for p in preds]), [p.forces_eV_A for p in preds], [p.stress_eV_A3 for p in preds]


def torch_calculator(potential_or_path):
    """mace-torch's MACECalculator (float64) for a MACEPotential (converted) or a saved .model file."""
    from mace.calculators import MACECalculator

    if isinstance(potential_or_path, mace.MACEPotential):
        module = mace.to_torch(potential_or_path, dtype=torch.float64)
    else:
        module = torch.load(potential_or_path, weights_only=False)
    return MACECalculator(models=module, device="cpu", default_dtype="float64")


def torch_results(calc, atoms):
    b = atoms.copy()
    b.calc = calc
    return b.get_potential_energy(), b.get_forces(), (b.get_stress(voigt=False) if all(b.pbc) else None)


def leaves(params) -> dict:
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {strategies.key_of(p): np.asarray(v) for p, v in flat}


def bit_identical(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# ----------------------------------------------------------------------------------------
# data sources and input errors (Done-when 6)


def test_labels_read_alike_from_atoms_info_extxyz_and_label_store(frames, tmp_path):
    from slhmc_jax.targets.store import LabelStore
    from slhmc_jax.targets.base import TargetResult

    spc = frames[:3]
    keyed = []
    for a in spc:
        b = ase.Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
        b.info["REF_energy"] = a.get_potential_energy()
        b.arrays["REF_forces"] = a.get_forces()
        b.info["REF_stress"] = a.get_stress()
        keyed.append(b)
    ase.io.write(tmp_path / "labels.extxyz", spc, format="extxyz")
    store = LabelStore(tmp_path / "labels.sqlite")
    for a in spc:
        store.put(a, {"target": "emt"}, TargetResult(a.get_potential_energy(), a.get_forces(), a.get_stress()))
    sources = {"atoms": spc, "info/arrays keys": keyed, "extxyz": tmp_path / "labels.extxyz",
               "label store": str(tmp_path / "labels.sqlite")}
    reference = ft.read_structures(spc)
    for name, src in sources.items():
        got = ft.read_structures(src)
        assert len(got) == 3, name
        for r, g in zip(reference, got):
            np.testing.assert_array_equal(g.numbers, r.numbers, err_msg=name)
            np.testing.assert_allclose(g.positions, r.positions, atol=1e-8, err_msg=name)
            assert abs(g.energy_eV - r.energy_eV) < 1e-8, name
            np.testing.assert_allclose(g.forces_eV_A, r.forces_eV_A, atol=1e-8, err_msg=name)
            np.testing.assert_allclose(g.stress_eV_A3, r.stress_eV_A3, atol=1e-10, err_msg=name)
    # Voigt (xx, yy, zz, yz, xz, xy) -> symmetric 3x3
    s = reference[0].stress_eV_A3
    v = spc[0].get_stress()
    assert s[1, 2] == v[3] and s[0, 2] == v[4] and s[0, 1] == v[5] and np.allclose(s, s.T)


def _compile_events():
    from jax import monitoring

    events = []
    monitoring.register_event_duration_secs_listener(
        lambda name, *_, **__: events.append(name) if "backend_compile" in name else None)
    return events


@pytest.mark.parametrize("case", ["missing forces", "nan energy", "inf forces", "nan stress", "unknown element",
                                  "empty train", "empty valid"])
def test_bad_data_raises_a_clear_error_before_any_compilation(frames, tiny, case):
    def relabel(a, **kw):
        b = a.copy()
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
        res.update(kw)
        b.calc = SinglePointCalculator(b, **{k: v for k, v in res.items() if v is not None})
        return b

    train, valid = list(frames[:6]), None
    bad_f = frames[2].get_forces().copy()
    bad_f[1, 0] = np.inf
    bad_s = frames[2].get_stress().copy()
    bad_s[0] = np.nan
    expected = {
        "missing forces": ("no force labels", relabel(frames[2], forces=None)),
        "nan energy": ("NaN or infinite", relabel(frames[2], energy=np.nan)),
        "inf forces": ("NaN or infinite", relabel(frames[2], forces=bad_f)),
        "nan stress": ("NaN or infinite", relabel(frames[2], stress=bad_s)),
        "unknown element": ("['Ni'] not in the species table", None),
    }
    settings = ft.FinetuneSettings(**BASE)
    if case in expected:
        message, item = expected[case]
        if item is None:
            item = frames[2].copy()
            item.numbers[0] = 28
            item.calc = SinglePointCalculator(item, energy=0.0, forces=np.zeros((len(item), 3)))
        train[2] = item
    elif case == "empty train":
        message, train = "train data is empty", []
    else:
        message, valid = "valid data is empty", []
    events = _compile_events()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ft.finetune(tiny, train, valid, settings=settings)
    assert events == [], f"{case}: compiled {len(events)} computation(s) before rejecting the data"
    if case == "missing forces":  # the same data are fine when the loss does not weight forces
        ft.data.check_structures(ft.read_structures(train), name="train", need_forces=False)


@pytest.mark.parametrize("field,value,allowed", [
    ("valid_fraction", 0.0, r"in \(0.0, 1.0\)"), ("valid_fraction", 1.0, r"in \(0.0, 1.0\)"),
    ("valid_fraction", -0.2, r"in \(0.0, 1.0\)"), ("batch_size", 0, ">= 1"), ("strategy", "sgd", "one of"),
    ("learning_rate", float("nan"), "finite"), ("lora_targets", ("skip",), "drawn from"),
    ("replay_fraction", 0.1, "rounds to >= 1"),
])
def test_settings_are_validated_at_construction_naming_the_field(field, value, allowed):
    with pytest.raises(ValueError, match=rf"FinetuneSettings\.{field} must be .*{allowed}"):
        ft.FinetuneSettings(**{field: value})


def test_settings_from_toml_and_unknown_keys(tmp_path):
    path = tmp_path / "ft.toml"
    path.write_text('[finetune]\nepochs = 7\nstrategy = "lora"\nlora_targets = ["linear", "readout"]\nloss = "huber"\n')
    s = ft.FinetuneSettings.from_toml(path)
    assert (s.epochs, s.strategy, s.lora_targets, s.loss) == (7, "lora", ("linear", "readout"), "huber")
    with pytest.raises(ValueError, match=r"unknown FinetuneSettings key\(s\) \['epoch'\]"):
        ft.FinetuneSettings.from_mapping({"epoch": 3})
    example = ft.FinetuneSettings.from_toml(pathlib.Path(__file__).parents[1] / "examples" / "finetune.toml")
    assert example.forces_weight == 100.0 and example.output_dir == "finetune_run"


# ----------------------------------------------------------------------------------------
# batches: predictions and loss against independent references


def _mixed_structures(frames):
    """3 structures of different sizes and periodicity: two 8-atom cells, a 4-atom cell, a Cu2Al2 cluster."""
    small = bulk("Cu", "fcc", a=3.75, cubic=True)
    small.numbers[:2] = 13
    small.rattle(0.05, seed=5)
    cluster = ase.Atoms("Cu2Al2", positions=[[0, 0, 0], [2.5, 0.1, 0], [0.2, 2.6, 0.3], [1.3, 1.2, 2.1]])
    out = []
    for a in (frames[0], small, cluster, frames[9]):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=1.0, forces=np.zeros((len(b), 3)))
        out.append(b)
    return ft.read_structures(out)


@pytest.mark.parametrize("layout,slots", [("flat", True), ("vmap", False)])  # (flat, scatter): every other test
def test_padded_batch_predictions_equal_mace_torch_per_structure(frames, tiny, tiny_torch, layout, slots):
    structures = _mixed_structures(frames)
    graphs = batching.build_graphs(structures, tiny.species_table.lookup, tiny.cutoff)
    k = max(g.max_in_degree() for g in graphs)
    model = model_mod.as_model(tiny, k if slots else None)
    buckets = batching.plan_buckets(graphs, 5, 1, layout)  # 4 structures in 5 slots: one padding graph
    _, batch = batching.assemble(graphs, buckets)
    pred, _ = _predict(model, tiny.params, batch, layout, True)
    calc = tiny_torch
    n_pad = batch.positions.shape[1] if layout == "vmap" else None
    start = 0
    for slot, (s, g) in enumerate(zip(structures, graphs)):
        e, f, st = torch_results(calc, s.to_atoms())
        a0 = slot * n_pad if layout == "vmap" else start
        assert abs(float(pred.energy[slot]) - e) < 1e-10
        np.testing.assert_allclose(np.asarray(pred.forces[a0:a0 + g.n_atoms]), f, atol=1e-10)
        if s.periodic:
            np.testing.assert_allclose(np.asarray(pred.stress[slot]), st, atol=1e-10)
        else:
            assert not np.any(np.asarray(pred.stress[slot]))
        start += g.n_atoms


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_loss_equals_the_closed_form(kind):
    rng = np.random.default_rng(0)
    n_atoms = np.array([3, 5])
    atom_graph = np.array([0] * 3 + [1] * 5 + [2, 2])  # two padding atoms
    e_ref, e_pred = rng.normal(size=2), rng.normal(size=2)
    f_ref, f_pred = rng.normal(size=(10, 3)) * 0.03, rng.normal(size=(10, 3)) * 0.03
    s_ref, s_pred = rng.normal(size=(2, 3, 3)) * 0.02, rng.normal(size=(2, 3, 3)) * 0.02
    batch = batching.GraphBatch(
        positions=np.zeros((10, 3)), cells=np.tile(np.eye(3), (2, 1, 1)), species=np.zeros(10, np.int32),
        atomic_numbers=np.zeros(10, np.int32), atom_graph=atom_graph, senders=np.zeros(1, np.int32),
        receivers=np.zeros(1, np.int32), shifts=np.zeros((1, 3), np.int32), edge_mask=np.zeros(1, bool),
        graph_mask=np.array([True, True]), is_target=np.array([True, True]), n_atoms=n_atoms.astype(float),
        periodic=np.array([True, True]), energy=e_ref, forces=f_ref, stress=s_ref, has_forces=np.array([True, True]),
        has_stress=np.array([True, False]))
    pred = model_mod.Predictions(jnp.asarray(e_pred), jnp.asarray(f_pred), jnp.asarray(s_pred))
    cfg = loss_mod.LossSettings(kind, 1.3, 70.0, 4.0, 0.01, 0.02, 0.005)

    def rho(x, d):
        return x * x if kind == "mse" else np.where(np.abs(x) <= d, 0.5 * x * x, d * (np.abs(x) - 0.5 * d))

    expected = (1.3 * np.mean(rho((e_pred - e_ref) / n_atoms, 0.01))
                + 70.0 * np.mean(rho(f_pred[:8] - f_ref[:8], 0.02))
                + 4.0 * np.mean(rho(s_pred[0] - s_ref[0], 0.005)))
    assert abs(float(loss_mod.loss(pred, batch, cfg)) - expected) < 1e-12


# ----------------------------------------------------------------------------------------
# training (naive), metrics files, compilation count, export, resume (Done-when 1 small, 4)


def test_training_lowers_the_validation_force_rmse_and_compiles_once(naive_run, frames, tiny):
    result, out, compiled = naive_run
    first, last = result.history[0], result.history[-1]
    assert first.epoch == 0 and math.isnan(first.train_loss) and len(result.history) == 31
    assert last.valid_forces_rmse_eV_A < first.valid_forces_rmse_eV_A / 5, (first.valid_forces_rmse_eV_A, last.valid_forces_rmse_eV_A)
    assert last.train_forces_rmse_eV_A < 0.1  # eV/A; EMT force RMS of the data is ~0.6 eV/A
    assert result.stopped == "completed" and result.steps == 30 * 4
    # warm-up (6 of 120 steps) then cosine from 0.02 to 0.01 * 0.02
    lrs = [h.learning_rate for h in result.history]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.02 * 4 / 6) and max(lrs) <= 0.02
    assert lrs[-1] == pytest.approx(2e-4) and all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    # one static batch shape -> the train step compiled once, and an equal run compiles nothing new
    assert result.compiled_shapes == 1 and compiled <= 1
    before = step_mod.compiled_shapes()
    again = ft.finetune(tiny, frames[:16], frames[16:], settings=ft.FinetuneSettings(**dict(BASE, epochs=30)))
    assert step_mod.compiled_shapes() == before
    for a, b in zip(jax.tree_util.tree_leaves(again.potential.params), jax.tree_util.tree_leaves(result.potential.params)):
        assert bit_identical(a, b)
    # metrics files
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 31 and rows[-1]["valid_forces_rmse_eV_A"] == pytest.approx(last.valid_forces_rmse_eV_A)
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 32
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(result.potential, mace.MACEPotential)


def test_finetuned_model_saved_for_mace_torch_gives_the_same_energies(naive_run, frames, tmp_path):
    result, _, _ = naive_run
    path = tmp_path / "finetuned.model"
    mace.save_torch(result.potential, path)
    calc = torch_calculator(path)
    energies, forces, _ = jax_predict(result.potential, frames[16:])
    for a, e_jax, f_jax in zip(frames[16:], energies, forces):
        e, f, _ = torch_results(calc, a)
        assert abs(e - e_jax) / len(a) < 1e-6
        np.testing.assert_allclose(f, f_jax, atol=1e-6)


def test_resumed_run_ends_with_the_parameters_of_an_uninterrupted_run(naive_run, frames, tiny, tmp_path):
    result, _, _ = naive_run
    settings = ft.FinetuneSettings(**BASE, output_dir=str(tmp_path), checkpoint_every_steps=5)
    stopped = ft.finetune(tiny, frames[:16], frames[16:], settings=dataclasses.replace(settings, max_steps=47))
    assert stopped.stopped == "max_steps" and stopped.steps == 47  # mid-epoch 12 (4 steps per epoch)
    resumed = ft.finetune(tiny, frames[:16], frames[16:], settings=dataclasses.replace(settings, resume=True))
    assert resumed.stopped == "completed" and resumed.steps == result.steps
    for a, b in zip(jax.tree_util.tree_leaves(resumed.potential.params), jax.tree_util.tree_leaves(result.potential.params)):
        assert bit_identical(a, b)
    assert [h.valid_loss for h in resumed.history] == [h.valid_loss for h in result.history]
    # a checkpoint is only resumed by the run it belongs to
    with pytest.raises(ValueError, match="belongs to another run"):
        ft.finetune(tiny, frames[:15], frames[16:], settings=dataclasses.replace(settings, resume=True))


def test_cli_finetune_with_toml_settings_matches_the_library(naive_run, frames, tiny, tmp_path):
    from slhmc_jax.app import cli

    ase.io.write(tmp_path / "train.extxyz", frames[:16], format="extxyz")
    ase.io.write(tmp_path / "valid.extxyz", frames[16:], format="extxyz")
    mace.save(tiny, tmp_path / "base.npz")
    toml = "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}" for k, v in BASE.items()
                     if v is not None)
    (tmp_path / "ft.toml").write_text("[finetune]\n" + toml + "\n")
    rc = cli.main(["finetune", "--data", str(tmp_path / "train.extxyz"), "--valid", str(tmp_path / "valid.extxyz"),
                   "--model", str(tmp_path / "base.npz"), "--out", str(tmp_path / "out.npz"), "--config",
                   str(tmp_path / "ft.toml"), "--output-dir", str(tmp_path / "run"), "--set", "early_stopping_patience=40"])
    assert rc == 0
    got = mace.load(tmp_path / "out.npz")
    ref = ft.finetune(tiny, tmp_path / "train.extxyz", tmp_path / "valid.extxyz",
                      settings=ft.FinetuneSettings(**dict(BASE, early_stopping_patience=40)))
    for a, b in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(ref.potential.params)):
        assert bit_identical(a, b)
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert cli.main(["finetune", "--data", str(tmp_path / "train.extxyz"), "--model", str(tmp_path / "base.npz"),
                     "--out", str(tmp_path / "x.npz"), "--set", "valid_fraction=1.5"]) == 2


# ----------------------------------------------------------------------------------------
# strategies (Done-when 3)


def test_freeze_readouts_leaves_every_other_parameter_bit_identical(frames, tiny):
    settings = ft.FinetuneSettings(**dict(BASE, epochs=3), strategy="freeze", freeze_trainable="readouts", refit_e0=False,
                                   optimizer="amsgrad", schedule="plateau", weight_decay=1e-4)
    result = ft.finetune(tiny, frames[:16], frames[16:], settings=settings)
    before, after = leaves(tiny.params), leaves(result.potential.params)
    changed = {k for k in before if not bit_identical(before[k], after[k])}
    assert changed and all(k.startswith("readouts/") for k in changed), changed
    assert all(k.startswith("readouts/") for k in result.trained) and set(result.trained) >= changed
    assert result.history[-1].train_loss < result.history[1].train_loss
    assert [h.learning_rate for h in result.history[1:]] == pytest.approx([0.02] * 3)  # no plateau yet


@pytest.fixture(scope="module")
def lora_run(frames, tiny):
    settings = ft.FinetuneSettings(**dict(BASE, epochs=4), strategy="lora", lora_rank=2, refit_e0=False)
    return ft.finetune(tiny, frames[:16], frames[16:], settings=settings), settings


def test_lora_changes_only_adapted_weights_by_exactly_scale_A_B(lora_run, tiny):
    result, settings = lora_run
    base, merged = leaves(tiny.params), leaves(result.potential.params)
    adapters = result.trained
    assert adapters and all(set(v) == {"A", "B"} for v in adapters.values())
    assert {k.split("/")[0] for k in adapters} == {"interactions", "products", "readouts"}
    scale = settings.lora_alpha / settings.lora_rank
    for k in base:
        if k in adapters:
            a, b = np.asarray(adapters[k]["A"]), np.asarray(adapters[k]["B"])
            assert a.shape == (base[k].shape[0], 2) and b.shape == (2, base[k].shape[1])
            assert np.abs(b).max() > 0, f"{k}: adapter did not train"
            np.testing.assert_allclose(merged[k], base[k] + scale * a @ b, rtol=0, atol=1e-13)
        else:
            assert bit_identical(merged[k], base[k]), f"{k} changed without an adapter"
    # adapters mix channels within one irrep path: every adapted matrix is one (irrep -> same irrep) path
    assert result.n_trainable == sum(a["A"].size + a["B"].size for a in adapters.values())


def test_lora_model_stays_rotation_equivariant(lora_run, frames):
    result, _ = lora_run
    rng = np.random.default_rng(4)
    rot = testing.random_rotation(rng)
    a = frames[17].copy()
    b = a.copy()
    b.set_cell(np.asarray(a.cell) @ rot.T, scale_atoms=False)
    b.positions = a.positions @ rot.T
    energies, (f_a, f_b), (s_a, s_b) = jax_predict(result.potential, [a, b])
    assert abs(energies[1] - energies[0]) < 1e-10
    assert np.max(np.abs(f_b - f_a @ rot.T)) < 1e-10
    assert np.max(np.abs(s_b - rot @ s_a @ rot.T)) < 1e-10


def test_merged_lora_model_reproduces_the_adapter_model_energies(lora_run, frames, tiny, tmp_path):
    result, settings = lora_run
    # the adapter model: the base leaves plus the trained adapters, as the train step evaluates it
    split = strategies.make_split(tiny.params, "lora", lora_targets=settings.lora_targets,
                                  lora_rank=settings.lora_rank, lora_alpha=settings.lora_alpha)
    _, frozen = strategies.partition(split, tiny.params)
    adapter_energies, _, _ = jax_predict(tiny, frames[16:], params=step_mod.combine(split, result.trained, frozen))
    # the merged model, saved and reloaded natively and in mace-torch
    mace.save(result.potential, tmp_path / "merged.npz")
    mace.save_torch(result.potential, tmp_path / "merged.model")
    native_energies, _, _ = jax_predict(mace.load(tmp_path / "merged.npz"), frames[16:])
    np.testing.assert_allclose(native_energies, adapter_energies, rtol=0, atol=1e-10)
    calc = torch_calculator(tmp_path / "merged.model")
    for a, e in zip(frames[16:], adapter_energies):
        assert abs(torch_results(calc, a)[0] - e) / len(a) < 1e-6


# ----------------------------------------------------------------------------------------
# reference energies (Done-when 2)


def test_e0_refit_recovers_known_per_element_offsets(tiny):
    comp = composition_frames()
    offsets = {29: 3.7, 13: -12.1}  # eV per atom of Cu / Al (PySCF vs VASP-like constants)
    # (a) labels = the model's own energy (E0 = 0) + offsets: the refit must give E0 = offsets exactly
    zero = tiny.with_params({**tiny.params, "atomic_energies": jnp.zeros(2)})
    settings = ft.FinetuneSettings(**BASE)
    shifted = []
    energies, forces, _ = jax_predict(zero, comp)
    for a, e, f in zip(comp, energies, forces):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=e + sum(offsets[z] for z in a.numbers), forces=f)
        shifted.append(b)
    refit = ft.refit_reference_energies(tiny, shifted, settings=settings)
    np.testing.assert_allclose(np.asarray(refit.params["atomic_energies"]), [offsets[13], offsets[29]], atol=1e-6)
    # (b) EMT labels with and without the offsets: the refitted E0 differ by exactly the offsets
    plus = []
    for a in comp:
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy() + sum(offsets[z] for z in a.numbers), forces=a.get_forces())
        plus.append(b)
    e0 = np.asarray(ft.refit_reference_energies(tiny, comp, settings=settings).params["atomic_energies"])
    e0_plus = np.asarray(ft.refit_reference_energies(tiny, plus, settings=settings).params["atomic_energies"])
    np.testing.assert_allclose(e0_plus - e0, [offsets[13], offsets[29]], atol=1e-6)
    # the rest of the model is untouched
    assert all(bit_identical(leaves(refit.params)[k], v) for k, v in leaves(tiny.params).items() if k != "atomic_energies")


def test_e0_refit_on_a_single_composition_fixes_only_the_combination(frames, tiny):
    settings = ft.FinetuneSettings(**BASE)
    with pytest.warns(UserWarning, match="fix only 1 combinations of the 2 reference energies"):
        refit = ft.refit_reference_energies(tiny, frames[:8], settings=settings)
    old, new = np.asarray(tiny.params["atomic_energies"]), np.asarray(refit.params["atomic_energies"])
    delta = new - old
    # Cu4Al4 only: the change lies along the composition (4, 4) (null-space component kept) ...
    assert abs(delta[0] - delta[1]) < 1e-10 and abs(delta[0]) > 1e-3
    # ... and the fitted combination is the least-squares one: mean residual per structure matched
    zero = tiny.with_params({**tiny.params, "atomic_energies": jnp.zeros(2)})
    residual = [a.get_potential_energy() for a in frames[:8]] - jax_predict(zero, frames[:8])[0]
    assert abs(4 * new[0] + 4 * new[1] - np.mean(residual)) < 1e-6


def test_e0_least_squares_keeps_absent_elements_and_solves_full_rank_exactly():
    counts = np.array([[2, 0, 1], [1, 0, 3], [4, 0, 4], [0, 0, 2]], float)  # element 1 absent
    true = np.array([-1.5, 9.0, -7.25])
    fit = fit_reference_energies(counts, counts @ true, current_eV=np.array([0.3, 9.0, 0.1]))
    np.testing.assert_allclose(fit.E0_eV, true, atol=1e-12)
    assert (fit.rank, fit.n_elements) == (2, 2) and fit.rms_residual_eV < 1e-12


# ----------------------------------------------------------------------------------------
# replay and any Potential


def test_replay_pseudo_labels_are_the_base_model_and_batches_hold_the_fraction(frames, tiny):
    plan = batching.epoch_batches(16, 4, 0, 3, n_replay=6, replay_per_batch=1)
    assert sorted(np.concatenate([t for t, _ in plan]).tolist()) == list(range(16))
    assert all(len(t) <= 3 and len(r) == 1 for t, r in plan)
    unlabelled = [ase.Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=True) for a in emt_frames(6, seed=9)]
    settings = ft.FinetuneSettings(**dict(BASE, epochs=3), strategy="replay", replay_fraction=0.25, replay_labels="base_model")
    result = ft.finetune(tiny, frames[:15], frames[16:], settings=settings, replay=unlabelled)
    start = result.history[0]
    # epoch 0: the model is the base model (after the E0 refit), so its replay errors vanish
    assert start.replay_energy_rmse_eV_atom < 1e-12 and start.replay_forces_rmse_eV_A < 1e-12
    assert start.replay_stress_rmse_eV_A3 < 1e-12
    assert result.history[-1].replay_forces_rmse_eV_A > 0
    assert result.steps == 3 * 5  # 15 training structures, 3 per batch + 1 replay
    with pytest.raises(ValueError, match="needs replay data"):
        ft.finetune(tiny, frames[:15], frames[16:], settings=settings)


@dataclasses.dataclass(frozen=True, eq=False)
class TrainableLennardJones:
    """A Potential that is not a FlaxPotential: Lennard-Jones with trainable epsilon (eV) and sigma (A)."""

    params: dict
    cutoff: float = 6.0
    atomic_numbers: tuple = (18,)

    def energy(self, params, positions, cell, atomic_numbers, neighbours):
        return lennard_jones_energy(positions, cell, atomic_numbers, neighbours, epsilon_eV=params["epsilon_eV"],
                                    sigma_A=params["sigma_A"], cutoff_A=6.0, onset_A=5.0)


def lj_params(epsilon_eV: float, sigma_A: float) -> dict:
    return {"epsilon_eV": jnp.array(epsilon_eV, jnp.float64), "sigma_A": jnp.array(sigma_A, jnp.float64)}


LJ_REFERENCE = TrainableLennardJones(lj_params(0.0104, 3.40))


def lj_label(atoms, params):
    """``atoms`` (copied) with Lennard-Jones energy and forces for ``params`` (one jitted reference)."""
    atoms = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    e, f, _ = testing.evaluate(LJ_REFERENCE, atoms, params=params)
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
    return atoms


def lj_frames(epsilon_eV: float, sigma_A: float, seeds) -> list:
    frames = []
    for k in seeds:
        atoms = bulk("Ar", "fcc", a=5.30, cubic=True)
        atoms.rattle(0.15, seed=k)
        frames.append(lj_label(atoms, lj_params(epsilon_eV, sigma_A)))
    return frames


LJ_SETTINGS = dict(epochs=60, batch_size=3, learning_rate=0.02, ema_decay=None, early_stopping_patience=None, progress=False,
                   energy_weight=100.0, forces_weight=100.0)


def test_any_potential_recovers_lennard_jones_parameters_from_its_labels():
    start = TrainableLennardJones({"epsilon_eV": jnp.asarray(0.0150), "sigma_A": jnp.asarray(3.25)})
    train, valid = ft.data.split_validation(ft.read_structures(lj_frames(0.0104, 3.40, range(8))), 0.25, 0)
    result = ft.finetune(start, train, valid, settings=ft.FinetuneSettings(**LJ_SETTINGS))
    got = result.potential.params
    assert isinstance(result.potential, TrainableLennardJones) and result.reference_energies_eV is None
    assert abs(float(got["sigma_A"]) / 3.40 - 1) < 1e-4 and abs(float(got["epsilon_eV"]) / 0.0104 - 1) < 1e-3, got


def test_early_stopping_returns_the_weights_of_the_best_validation_epoch():
    # train on sigma = 3.40 A labels, validate on sigma = 3.31 A labels (between the start, 3.25, and the
    # training optimum): the validation loss falls, then rises once sigma passes ~3.31
    start = TrainableLennardJones({"epsilon_eV": jnp.asarray(0.0150), "sigma_A": jnp.asarray(3.25)})
    settings = ft.FinetuneSettings(**dict(LJ_SETTINGS, early_stopping_patience=3))
    # the configurations of the test above (shared compiled steps), validation relabelled with sigma = 3.31 A
    train, held_out = ft.data.split_validation(ft.read_structures(lj_frames(0.0104, 3.40, range(8))), 0.25, 0)
    valid = [lj_label(s.to_atoms(), lj_params(0.0104, 3.31)) for s in held_out]
    result = ft.finetune(start, train, valid, settings=settings)
    losses = [h.valid_loss for h in result.history]
    assert result.stopped == "early_stopping" and len(result.history) == result.best_epoch + 4 and result.best_epoch > 0
    assert losses[result.best_epoch] == min(losses) and all(v > min(losses) for v in losses[result.best_epoch + 1:])
    # the returned weights are the best epoch's: their validation loss, recomputed in closed form
    # (all structures have 4 atoms: L = 100 mean((dE / 4)^2) + 100 mean(dF^2)), is the recorded minimum
    pred = [lj_label(a, result.potential.params) for a in valid]
    de = np.array([(p.get_potential_energy() - a.get_potential_energy()) / 4 for p, a in zip(pred, valid)])
    df = np.concatenate([p.get_forces() - a.get_forces() for p, a in zip(pred, valid)])
    assert 100 * np.mean(de**2) + 100 * np.mean(df**2) == pytest.approx(min(losses), rel=1e-9)
    assert 3.25 < float(result.potential.params["sigma_A"]) < 3.40


# ----------------------------------------------------------------------------------------
# slow: MACE-MP-0 small hyperparameters (Done-when 1), freezing the last interaction

MP0_RECIPE = dict(epochs=20, batch_size=4, learning_rate=0.01, n_buckets=2, early_stopping_patience=None, progress=False)


def mp0_data():
    frames = emt_frames(32, seed=1)  # 16 frames at 300 K, 16 at 1200 K
    return frames[:12] + frames[16:28], frames[12:16] + frames[28:]


@pytest.mark.slow
def test_mp0_small_random_weights_lower_the_validation_force_rmse_5x():
    train, valid = mp0_data()
    potential = mace.build(mace.mp0_hyperparameters("small", atomic_numbers=ELEMENTS), key=jax.random.PRNGKey(0),
                           dtype=jnp.float32)
    result = ft.finetune(potential, train, valid, settings=ft.FinetuneSettings(**MP0_RECIPE))
    start, end = result.history[0].valid_forces_rmse_eV_A, result.history[-1].valid_forces_rmse_eV_A
    print(f"MP-0 small, random weights: validation force RMSE {start:.4f} -> {end:.4f} eV/A ({start / end:.1f}x)")
    assert end < start / 5


def mace_torch_model(h, seed: int):
    """A random-weight mace-torch ScaleShiftMACE (float64), built by mace-torch itself."""
    from e3nn import o3
    from mace.modules import ScaleShiftMACE
    from mace.modules.blocks import RealAgnosticResidualInteractionBlock

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(seed)
    try:
        model = ScaleShiftMACE(
            r_max=h.r_max, num_bessel=h.num_bessel, num_polynomial_cutoff=h.num_polynomial_cutoff, max_ell=h.max_ell,
            interaction_cls=RealAgnosticResidualInteractionBlock, interaction_cls_first=RealAgnosticResidualInteractionBlock,
            num_interactions=h.num_interactions, num_elements=len(h.atomic_numbers), hidden_irreps=o3.Irreps(h.hidden_irreps),
            MLP_irreps=o3.Irreps(h.MLP_irreps), atomic_energies=np.asarray(h.atomic_energies_eV),
            avg_num_neighbors=h.avg_num_neighbors, atomic_numbers=list(h.atomic_numbers), correlation=list(h.correlations),
            gate=torch.nn.functional.silu, radial_MLP=list(h.radial_MLP), atomic_inter_scale=h.atomic_inter_scale,
            atomic_inter_shift=h.atomic_inter_shift, use_reduced_cg=False)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


@pytest.mark.slow
def test_mp0_small_converted_from_mace_torch_fine_tunes_and_saves_back(tmp_path):
    train, valid = mp0_data()
    h = mace.mp0_hyperparameters("small", atomic_numbers=ELEMENTS, atomic_energies_eV=(-3.2, -4.1))
    potential = mace.from_torch(mace_torch_model(h, seed=7), dtype=jnp.float64)
    result = ft.finetune(potential, train, valid, settings=ft.FinetuneSettings(**MP0_RECIPE))
    assert result.history[-1].valid_forces_rmse_eV_A < result.history[0].valid_forces_rmse_eV_A / 3
    mace.save_torch(result.potential, tmp_path / "finetuned.model")
    calc = torch_calculator(tmp_path / "finetuned.model")
    energies, forces, _ = jax_predict(result.potential, valid)
    worst = 0.0
    for a, e, f in zip(valid, energies, forces):
        e_t, f_t, _ = torch_results(calc, a)
        worst = max(worst, abs(e_t - e) / len(a))
        np.testing.assert_allclose(f_t, f, atol=1e-6)
    print(f"fine-tuned MP-0 small (from mace-torch) -> save_torch: max |E_torch - E_jax| = {worst:.2e} eV/atom")
    assert worst < 1e-6


@pytest.mark.slow
def test_freeze_readouts_and_last_interaction_keeps_the_first_interaction_bit_identical(frames):
    two = mace.build(dataclasses.replace(TINY, num_interactions=2), key=jax.random.PRNGKey(5), dtype=jnp.float64)
    settings = ft.FinetuneSettings(**dict(BASE, epochs=3), strategy="freeze", freeze_trainable="readouts+last_interaction",
                                   refit_e0=False)
    result = ft.finetune(two, frames[:16], frames[16:], settings=settings)
    before, after = leaves(two.params), leaves(result.potential.params)
    changed = {k for k in before if not bit_identical(before[k], after[k])}
    allowed = ("readouts/", "interactions/1/", "products/1/")
    assert any(k.startswith("interactions/1/") for k in changed) and any(k.startswith("readouts/") for k in changed)
    assert all(k.startswith(allowed) for k in changed), changed
