"""slhmc_jax.app.config: every key of every table refuses a bad value with an error naming the table and key."""

import dataclasses
import typing

import pytest

from slhmc_jax.app import config as cfg


def _keys():
    out = []
    for table, cls in cfg._tables().items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in cfg._RESERVED.get(table, ()):
                continue
            out.append((table, f.name, hints[f.name]))
    return out


def _wrong_type(tp):
    """A TOML value of a type the field does not take."""
    args = typing.get_args(tp)
    base = [a for a in args if a is not type(None)] or [tp]
    t = base[0]
    if t is str:
        return 12345
    if t is dict:
        return [1, 2]
    if typing.get_origin(t) is tuple:
        return {"not": "a list"}
    return "not a number"  # int, float, bool


@pytest.mark.parametrize("table,key,tp", _keys(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_key_refuses_a_wrong_type_and_names_itself(table, key, tp):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict({table: {key: _wrong_type(tp)}})
    assert f"[{table}] {key}:" in str(info.value)


@pytest.mark.parametrize("table,key,value", [
    ("run", "iterations", 0), ("run", "arms", ["foundation", "magic"]), ("run", "labels", "some"),
    ("system", "structure", "polymer"), ("system", "repeat", [1, 2]), ("system", "vacuum_A", -1.0),
    ("model", "dtype", "float16"),
    ("target", "code", "vasp"), ("target", "xc", "not-a-functional"), ("target", "dispatch", "mpi"),
    ("target", "workers", 0), ("target", "kpts", [2, 2]), ("target", "conv_tol_Ha", 0.0),
    ("sampler", "temperature_K", -300.0), ("sampler", "n_chains", 0), ("sampler", "ensemble", "nve"),
    ("sampler", "timestep_fs", 0.0), ("sampler", "target_acceptance", 1.5), ("sampler", "on_failure", "ignore"),
    ("finetune", "epochs", 0), ("finetune", "valid_fraction", 1.5), ("finetune", "strategy", "magic"),
    ("relabel", "n_chains", 0), ("relabel", "timestep_fs", -1.0),
    ("evaluation", "k", 0), ("evaluation", "pairs", [["Ti"]]), ("evaluation", "reference", "first"),
    ("cost", "seconds_per_call", 0.0), ("cost", "seconds_per_energy_call", 0.0), ("run", "replicates", 0), ("run", "replicates", 1000),
    ("reference", "min_ess", 0.0), ("reference", "chunk_steps", 3), ("reference", "max_steps", 10),
    ("reference", "n_chains", 0),
])
def test_impossible_values_are_refused_and_named(table, key, value):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict({table: {key: value}})
    assert f"[{table}] {key}" in str(info.value)


def test_unknown_keys_and_tables_are_named():
    with pytest.raises(cfg.ConfigError, match=r"\[sampler\] temperature: unknown key \(allowed: .*temperature_K"):
        cfg.from_dict({"sampler": {"temperature": 300}})
    with pytest.raises(cfg.ConfigError, match=r"unknown table\(s\) \['samplr'\]"):
        cfg.from_dict({"samplr": {}})
    with pytest.raises(cfg.ConfigError, match=r"\[sampler\] pressure_GPa"):
        cfg.from_dict({"sampler": {"ensemble": "npt"}})  # NPT without a pressure


def test_false_turns_an_optional_setting_off_and_the_toml_round_trips(tmp_path):
    c = cfg.from_dict({"finetune": {"ema_decay": False, "max_grad_norm": False}, "evaluation": {"r_max_A": 4.0}})
    assert c.finetune.ema_decay is None and c.finetune.max_grad_norm is None and c.evaluation.r_max_A == 4.0
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml(c))
    again = cfg.load(path)
    assert cfg.to_toml(again) == cfg.to_toml(c)


def test_shipped_configs_validate():
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("[qr]*.toml"))  # workflow configs
    assert [p.stem for p in examples] == ["quickstart", "rutile_hse06", "rutile_pbe", "rutile_r2scan"]
    for path in [cfg.quickstart_path(), *examples]:
        cfg.load(path)


def test_the_examples_quickstart_is_the_embedded_one():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "quickstart.toml"
    assert example.read_text() == cfg.quickstart_path().read_text()


@pytest.mark.parametrize("name", ["rutile_pbe", "rutile_r2scan", "rutile_hse06"])
def test_dry_run_prints_the_plan_and_runs_nothing(name, tmp_path, capsys, monkeypatch):
    """Done-when 5: the rutile configs validate and `--dry-run` prints the planned target calls and the cost."""
    from pathlib import Path

    from slhmc_jax.app import cli, workflow

    monkeypatch.chdir(tmp_path)
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.toml"
    assert cli.main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = workflow.plan(cfg.load(path))
    assert f"total                        <= {plan.total_calls:7d} target calls" in out
    assert f"= {plan.estimated_seconds:.0f} s" in out and "slhmc iteration 0" in out and "relabel labels" in out
    s = cfg.load(path).sampler
    assert plan.calls["slhmc iteration 0"] == s.n_chains * (s.warmup_steps + s.n_burn_in + s.n_steps) + 1
    assert not list(tmp_path.iterdir())  # nothing written, nothing run
