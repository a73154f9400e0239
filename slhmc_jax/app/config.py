"""The workflow's TOML configuration, validated into typed settings before anything starts.

Every table is one frozen dataclass; a key the table does not have, a value of the wrong type or
an impossible value raises :class:`ConfigError` naming the table, the key and why::

    [run]         RunConfig        iterations, arms, seed
    [system]      SystemConfig     the structure (a molecule, rutile, an ASE crystal, a file)
    [model]       ModelConfig      the foundation model (a MACE-MP name, a file, a registry model)
    [target]      TargetConfig     the judge (PySCF, an ASE calculator), dispatch
    [sampler]     SamplerSettings  the SLHMC production runs (slhmc_jax.sampler.settings)
    [finetune]    FinetuneSettings the recipe shared by every arm (slhmc_jax.finetune)
    [relabel]     RelabelConfig    the relabel control: sampling of the base model's distribution
    [evaluation]  EvaluationConfig the sampling of each arm's model and the observables
    [reference]   ReferenceConfig  the independent target reference (an SLHMC run sized by ESS)
    [cost]        CostConfig       seconds per target call, for ``--dry-run`` estimates

``slhmc validate`` reads the same tables plus ``[validate]`` (:class:`ValidateConfig`, the direct
target MD and the comparison), into a :class:`ValidationConfig` (:func:`load_validation`).

Units are in the key names (``temperature_K``, ``timestep_fs``, ``pressure_GPa``, ``conv_tol_Ha``).
TOML has no null: ``key = false`` turns an optional setting off (``ema_decay = false``).
"""

from __future__ import annotations

import dataclasses
import tomllib  # Python >= 3.11 (pyproject's requires-python)
import types
import typing
from pathlib import Path
from typing import Any, Union

from slhmc_jax.checks import FieldCheck
from slhmc_jax.sampler.md import THERMOSTATS

ARMS = ("foundation", "relabel", "slhmc")
STRUCTURES = ("molecule", "rutile", "crystal", "file")
TARGET_CODES = ("pyscf", "ase")
DISPATCH = ("serial", "processes", "dask")
SAMPLED_BY = ("hmc",)
VALIDATE_PROPOSALS = ("foundation", "finetuned")


class ConfigError(ValueError):
    """A bad configuration: names the table and key."""


def _fail(table: str, key: str, why: str):
    raise ConfigError(f"[{table}] {key}: {why}")


def _check(obj, table: str) -> FieldCheck:
    """The field checks of the dataclass ``obj`` of ``[table]``: errors read "[table] key: must be ...; got ..."."""
    return FieldCheck(obj, label=lambda key: f"[{table}] {key}:", error=ConfigError)


# ----------------------------------------------------------------------------------------
# the tables the workflow defines (SamplerSettings and FinetuneSettings come from their modules)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """iterations: self-learning iterations (SLHMC run -> fine-tune) of the slhmc arm (>= 1).
    arms: the arms to build and compare (the slhmc iterations always run: they train the reference's proposal).
    seed: seeds every arm (the sampler and fine-tuning seeds are offset from it per phase and replicate).
    replicates: fine-tunings and evaluation samplings of every arm, each with its own seeds (>= 1,
        < 1000); the relabel arm draws and labels (target calls) a training set per replicate; the
        slhmc arm's replicates share its frames (a new set would repeat the whole self-learning loop).
    labels: "forces" (the target computes forces at every SLHMC proposal: every stored row is a
        training label) or "accepted" (energies only while sampling; forces afterwards for the
        states trained on; cheaper when forces cost much more than energies or acceptance is low)
        or "energy" (energies only, everywhere: for targets without forces, e.g. PySCF's periodic
        r2SCAN; needs [finetune] forces_weight = 0).
    """

    iterations: int = 2
    arms: tuple[str, ...] = ARMS
    seed: int = 0
    labels: str = "forces"
    replicates: int = 1

    def __post_init__(self):
        check = _check(self, "run")
        for key in ("iterations", "replicates"):  # < 1000: they offset phase seeds, which are 1000 apart
            check.integer(key, 1, expected=">= 1")
            check.require(getattr(self, key) < 1000, key, "< 1000")
        check.choice("labels", ("forces", "accepted", "energy"), expected="'forces', 'accepted' or 'energy'")
        bad = [a for a in self.arms if a not in ARMS]
        check.require(not bad and bool(self.arms) and len(set(self.arms)) == len(self.arms), "arms",
                      f"distinct names from {ARMS}")


@dataclasses.dataclass(frozen=True)
class SystemConfig:
    """The start structure.

    structure: "molecule" (``name``: an ASE g2 name or one of ``slhmc_jax.structures.MOLECULES``),
        "rutile" (``repeat``), "crystal" (``name``, ``crystalstructure``, ``a_A``, ``repeat``: ASE's
        bulk), or "file" (``path``: any file ASE reads; relative paths are relative to the config).
    vacuum_A: box around a molecule, A (a molecule is not periodic; the box only holds it).
    """

    structure: str = "molecule"
    name: str = "H2O"
    repeat: tuple[int, ...] = (1, 1, 1)
    crystalstructure: str | None = None
    a_A: float | None = None
    path: str | None = None
    vacuum_A: float = 6.0

    def __post_init__(self):
        check = _check(self, "system")
        check.choice("structure", STRUCTURES)
        check.require(len(self.repeat) == 3 and all(r >= 1 for r in self.repeat), "repeat", "three positive integers")
        if self.structure == "file" and not self.path:
            _fail("system", "path", "is required when structure = 'file'")
        check.number("vacuum_A", 0.0, lo_open=True, expected="> 0 A")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The foundation model.

    foundation: "package:NAME" (a model shipped in ``slhmc_jax/data``), a MACE-MP name mace-torch
        knows ("mace-mp-0-small", "mace-mp-0-medium", "mace-mp-0-large", "mace-mpa-0-medium", ...),
        a file (mace-torch ``.model`` or the project's ``.npz``), or "registry:NAME" with
        ``hyperparameters`` (a model of ``slhmc_jax.models.registry``, random weights, ``seed``).
    dtype: "float64" or "float32" (the ML trajectory's precision; acceptance is float64 regardless).
    """

    foundation: str = "package:quickstart_tio2_lda"
    dtype: str = "float64"
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    seed: int = 0

    def __post_init__(self):
        _check(self, "model").choice("dtype", ("float32", "float64"), expected="'float32' or 'float64'")
        if not self.foundation:
            _fail("model", "foundation", "must name a model")
        if self.hyperparameters and not self.foundation.startswith("registry:"):
            _fail("model", "hyperparameters", "only apply to foundation = 'registry:NAME'")


@dataclasses.dataclass(frozen=True)
class TargetConfig:
    """The judge.

    code: "pyscf" (the keys below are PySCFTarget's) or "ase" (``calculator``: "emt", "morse" or
        "lj" with ``parameters``).
    dispatch: "serial" (in this process), "processes" (a local pool of ``workers``) or "dask"
        (``scheduler``: address, or empty for a local cluster of ``workers``).
    """

    code: str = "pyscf"
    xc: str = "pbe"
    basis: str = "def2-svp"
    pseudo: str | None = None
    kpts: tuple[int, ...] | None = None
    charge: int = 0
    spin: int = 0
    grids_level: int = 1
    conv_tol_Ha: float = 1e-8
    max_cycle: int = 100
    ke_cutoff_Ha: float = 200.0
    multigrid: bool = False
    density_fit: bool = False
    device: str = "auto"
    calculator: str | None = None
    parameters: dict = dataclasses.field(default_factory=dict)
    dispatch: str = "serial"
    workers: int = 2
    scheduler: str | None = None

    def __post_init__(self):
        check = _check(self, "target")
        check.choice("code", TARGET_CODES)
        check.choice("dispatch", DISPATCH)
        check.integer("workers", 1, expected=">= 1")
        check.number("conv_tol_Ha", 0.0, lo_open=True, expected="> 0 Ha")
        if self.code == "ase":
            check.choice("calculator", ("emt", "morse", "lj"), expected="'emt', 'morse' or 'lj' for code = 'ase'")
        if self.code == "pyscf":
            from slhmc_jax.targets.pyscf_target import check_xc

            try:
                check_xc(self.xc)
            except ValueError as err:
                _fail("target", "xc", str(err))
        if self.kpts is not None:
            check.require(len(self.kpts) == 3 and all(k >= 1 for k in self.kpts), "kpts", "three positive integers")


@dataclasses.dataclass(frozen=True)
class ModelSampling:
    """The sampler of a model judging itself (HMC with the model as proposal and target: its exact
    Boltzmann distribution, at the temperature, pressure and ensemble of [sampler]).

    n_chains, warmup_steps, burn_in_steps, trajectory_steps, timestep_fs (fs): as in [sampler].
    """

    TABLE = "?"
    n_chains: int = 8
    warmup_steps: int = 20
    burn_in_steps: int = 20
    trajectory_steps: int = 10
    timestep_fs: float = 0.5

    def __post_init__(self):
        check = _check(self, self.TABLE)
        for key, low in (("n_chains", 1), ("trajectory_steps", 1), ("warmup_steps", 0), ("burn_in_steps", 0)):
            check.integer(key, low, expected=f">= {low}")
        check.number("timestep_fs", 0.0, lo_open=True, expected="> 0 fs")

    def sampler_fields(self) -> dict:
        """The SamplerSettings fields this table sets."""
        return {k: getattr(self, k) for k in ("n_chains", "warmup_steps", "burn_in_steps", "trajectory_steps", "timestep_fs")}


@dataclasses.dataclass(frozen=True)
class RelabelConfig(ModelSampling):
    """The relabel control: configurations drawn from the base model's own Boltzmann distribution
    (:class:`ModelSampling`), as many as the slhmc arm trains on, labelled by the same target and
    fine-tuned with the same recipe."""

    TABLE = "relabel"


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(ModelSampling):
    """Each arm's final model sampled on its own (:class:`ModelSampling`, ``n_steps`` recorded
    steps), and what is measured against the target reference.

    reference: "independent" (its own SLHMC run, [reference], never trained on) or, circular (in the
        slhmc arm's training set), kept to compare with earlier runs: "last" (the production samples
        of the last SLHMC iteration) or "all" (every iteration's, pooled).
    pairs: element pairs for nearest-neighbour distances and RDFs, e.g. [["Ti", "O"]].
    k: nearest neighbours per atom of pair[0] (the Ti-O octahedron: 6; a TiO2 molecule: 2).
    r_max_A, n_bins: RDF range (A; default 6 A for a crystal, for a molecule the largest distance the
        frames support) and bins. n_bootstrap: bootstrap replicates of the intervals.
    """

    TABLE = "evaluation"
    n_steps: int = 200
    reference: str = "independent"
    pairs: tuple[tuple[str, ...], ...] = (("Ti", "O"),)
    k: int = 6
    r_max_A: float | None = None
    n_bins: int = 200
    n_bootstrap: int = 1000

    def __post_init__(self):
        super().__post_init__()
        check = _check(self, "evaluation")
        for key in ("n_steps", "k", "n_bins", "n_bootstrap"):
            check.integer(key, 1, expected=">= 1")
        check.number("r_max_A", 0.0, lo_open=True, optional=True, expected="> 0 A")
        check.choice("reference", ("independent", "last", "all"), expected="'independent', 'last' or 'all'")
        check.require(bool(self.pairs) and all(len(p) == 2 for p in self.pairs), "pairs",
                      "a list of [element, element] pairs")


@dataclasses.dataclass(frozen=True)
class ReferenceConfig(ModelSampling):
    """The target reference ([evaluation] reference = "independent"): an SLHMC run of its own, never
    trained on, the slhmc arm's final model proposing, the target judging (energies only), from
    [system]'s structure with its own seed, sized by effective sample size (slhmc_jax.app.reference).

    n_chains, warmup_steps, burn_in_steps, trajectory_steps, timestep_fs (fs): as in [sampler].
    min_ess: effective draws wanted of each [evaluation] pair's per-frame mean nearest-neighbour
        distance and of the target energy (> 0). chunk_steps: recorded steps per chain of the first
        stretch and of each extension (>= 4). max_steps: recorded steps per chain at most (>=
        chunk_steps): the run stops there, naming the observables short of min_ess.
    """

    TABLE = "reference"
    min_ess: float = 200.0
    chunk_steps: int = 50
    max_steps: int = 400

    def __post_init__(self):
        super().__post_init__()
        check = _check(self, "reference")
        check.number("min_ess", 0.0, lo_open=True, expected="> 0")
        for key in ("chunk_steps", "max_steps"):
            check.integer(key, 4, expected=">= 4")
        check.require(self.max_steps >= self.chunk_steps, "max_steps", f">= chunk_steps ({self.chunk_steps})")


@dataclasses.dataclass(frozen=True)
class CostConfig:
    """For ``slhmc run --dry-run``: the measured (or expected) cost of one target call.

    seconds_per_call: wall seconds of one energy (+ forces) evaluation on one worker, as measured
        for this system and functional (the example configs say where their number comes from).
    seconds_per_energy_call: the same for energies alone (reference, audit); default: seconds_per_call.
    """

    seconds_per_call: float = 1.0
    seconds_per_energy_call: float | None = None

    def __post_init__(self):
        for key in ("seconds_per_call", "seconds_per_energy_call"):
            _check(self, "cost").number(key, 0.0, lo_open=True, optional=key != "seconds_per_call", expected="> 0 s")


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
    """``slhmc validate``: direct MD on the target's own forces, the reference SLHMC is checked against.

    thermostat: "baoab" (Langevin, BAOAB splitting, ``friction_per_ps``) or "bussi" (stochastic
        velocity rescaling, ``tau_fs``); both sample the canonical ensemble exactly as dt -> 0.
    temperature_K: the thermostat's temperature, K (> 0); false: [sampler] temperature_K (SLHMC and
        MD must sample the same ensemble, so a value that differs from [sampler]'s is refused).
    friction_per_ps: Langevin friction gamma, 1/ps (> 0). tau_fs: Bussi relaxation time, fs (> 0).
    timestep_fs: the MD step, fs (> 0). md_steps: recorded MD steps per replica (>= 4).
    replicas: independent MD replicas, batched through one target call per step (>= 1).
    burn_in_steps: MD steps discarded after the Maxwell-Boltzmann start (>= 0).
    slhmc_steps: recorded SLHMC steps per chain (false: [sampler] n_steps).
    proposals: the SLHMC proposals to compare ("foundation", "finetuned").
    finetune_structures: at most this many direct-MD frames (evenly spaced, every replica) are the
        fine-tuning set of the "finetuned" proposal (>= 2).
    max_atoms: direct target MD is refused for systems with more atoms than this (>= 1).
    max_md_cost_s: direct target MD is refused when its estimated cost, replicas x (1 +
        burn_in_steps + md_steps) target force calls x [cost] seconds_per_call, exceeds this, s (> 0).
    """

    thermostat: str = "baoab"
    temperature_K: float | None = None
    friction_per_ps: float = 20.0
    tau_fs: float = 50.0
    timestep_fs: float = 1.0
    md_steps: int = 400
    replicas: int = 4
    burn_in_steps: int = 100
    slhmc_steps: int | None = None
    proposals: tuple[str, ...] = VALIDATE_PROPOSALS
    finetune_structures: int = 200
    max_atoms: int = 64
    max_md_cost_s: float = 4 * 3600.0

    def __post_init__(self):
        check = _check(self, "validate")
        check.choice("thermostat", THERMOSTATS)
        check.number("temperature_K", 0.0, lo_open=True, optional=True, expected="a temperature > 0 K (the thermostat's)")
        for key in ("friction_per_ps", "tau_fs", "timestep_fs", "max_md_cost_s"):
            check.number(key, 0.0, lo_open=True, expected="> 0")
        for key, low in (("md_steps", 4), ("replicas", 1), ("burn_in_steps", 0), ("finetune_structures", 2),
                         ("max_atoms", 1)):
            check.integer(key, low, expected=f">= {low}")
        check.integer("slhmc_steps", 4, optional=True, expected=">= 4")
        bad = [p for p in self.proposals if p not in VALIDATE_PROPOSALS]
        check.require(not bad and bool(self.proposals) and len(set(self.proposals)) == len(self.proposals), "proposals",
                      f"distinct names from {VALIDATE_PROPOSALS}")


@dataclasses.dataclass(frozen=True)
class WorkflowConfig:
    """The whole configuration (one attribute per table)."""

    run: RunConfig
    system: SystemConfig
    model: ModelConfig
    target: TargetConfig
    sampler: Any  # SamplerSettings
    finetune: Any  # FinetuneSettings
    relabel: RelabelConfig
    evaluation: EvaluationConfig
    cost: CostConfig
    reference: ReferenceConfig = ReferenceConfig()
    source: str = "<defaults>"


# ----------------------------------------------------------------------------------------
# TOML -> dataclasses


def _tables():
    from slhmc_jax.finetune import FinetuneSettings
    from slhmc_jax.sampler.settings import SamplerSettings

    return {"run": RunConfig, "system": SystemConfig, "model": ModelConfig, "target": TargetConfig,
            "sampler": SamplerSettings, "finetune": FinetuneSettings, "relabel": RelabelConfig,
            "evaluation": EvaluationConfig, "reference": ReferenceConfig, "cost": CostConfig}


# keys a table does not take from the file (the workflow sets them)
_RESERVED = {"finetune": ("output_dir", "resume", "progress"), "sampler": ()}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if tp is type(None):
        return "false (off)"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}.get(tp, str(tp))


def _coerce(table: str, key: str, value, tp):
    """``value`` as type ``tp`` (TOML's int -> float, list -> tuple), or ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        if type(None) in typing.get_args(tp) and (value is None or value is False) and bool not in typing.get_args(tp):
            return None  # TOML has no null: `key = false` turns an optional setting off
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(table, key, value, arg)
            except ConfigError:
                pass
        _fail(table, key, f"must be {_describe(tp)}; got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            _fail(table, key, f"must be a list; got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(v if inner is Any else _coerce(table, key, v, inner) for v in value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            _fail(table, key, f"must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(table, key, f"must be an integer; got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(table, key, f"must be a number; got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(table, key, f"must be a string; got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            _fail(table, key, f"must be a table; got {value!r}")
        return value
    return value


def build_table(table: str, cls, values: dict):
    """``cls(**values)`` for the TOML table ``table``, every key checked (ConfigError naming table and key)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    reserved = _RESERVED.get(table, ())
    kwargs = {}
    for key, value in values.items():
        if key not in fields or key in reserved:
            allowed = sorted(fields - set(reserved))
            _fail(table, key, f"unknown key (allowed: {', '.join(allowed)})")
        kwargs[key] = _coerce(table, key, value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        msg = str(err)
        key = next((k for k in sorted(fields, key=len, reverse=True) if k in msg), "?")
        raise ConfigError(f"[{table}] {key}: {msg}") from None


def from_dict(data: dict, source: str = "<dict>") -> WorkflowConfig:
    """Validate a parsed TOML document into a WorkflowConfig."""
    tables = _tables()
    unknown = sorted(set(data) - set(tables))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown} in {source} (allowed: {', '.join(tables)})")
    for name, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table; got {value!r}")
    sampler_defaults = dict(temperature_K=300.0, n_chains=8, n_steps=20, trajectory_steps=10, timestep_fs=0.5, seed=0)
    built = {}
    for name, cls in tables.items():
        values = dict(data.get(name, {}))
        if name == "sampler":
            values = sampler_defaults | values
        built[name] = build_table(name, cls, values)
    if built["run"].labels == "energy" and built["finetune"].forces_weight > 0:
        raise ConfigError("[finetune] forces_weight: must be 0 with [run] labels = 'energy' (no forces are computed); "
                          f"got {built['finetune'].forces_weight}")
    return WorkflowConfig(**built, source=source)


def _read_toml(path: Path) -> dict:
    """The parsed TOML document at ``path`` (ConfigError for a missing file or invalid TOML)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


def _anchored(config: WorkflowConfig, path: Path) -> WorkflowConfig:
    """``config`` with a relative [system] path read from the config file's folder."""
    system = config.system
    if system.path and not Path(system.path).is_absolute():
        return dataclasses.replace(config, system=dataclasses.replace(system, path=str(path.parent / system.path)))
    return config


def load(path) -> WorkflowConfig:
    """Read and validate a TOML config file."""
    path = Path(path)
    return _anchored(from_dict(_read_toml(path), source=str(path)), path)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """What ``slhmc validate`` reads: [validate] and the workflow's tables (only [system], [model],
    [target], [sampler], [finetune], [evaluation] and [cost] are used; [run] seed seeds it all)."""

    validate: ValidateConfig
    workflow: WorkflowConfig

    @property
    def source(self) -> str:
        return self.workflow.source


def validation_from_dict(data: dict, source: str = "<dict>") -> ValidationConfig:
    """Validate a parsed TOML document into a ValidationConfig (ConfigError naming table and key)."""
    data = dict(data)
    values = data.pop("validate", {})
    if not isinstance(values, dict):
        raise ConfigError(f"[validate] must be a table; got {values!r}")
    tables = _tables()
    unknown = sorted(set(data) - set(tables))
    if unknown:
        raise ConfigError(f"unknown table(s) {unknown} in {source} (allowed: validate, {', '.join(tables)})")
    validate = build_table("validate", ValidateConfig, values)
    workflow = from_dict(data, source=source)
    t = validate.temperature_K
    if t is not None and t != workflow.sampler.temperature_K:
        raise ConfigError(f"[validate] temperature_K: {t} K differs from [sampler] temperature_K = "
                          f"{workflow.sampler.temperature_K} K (both samplers must sample one ensemble)")
    if workflow.sampler.ensemble != "nvt":
        raise ConfigError(f"[sampler] ensemble: slhmc validate compares NVT sampling only; got {workflow.sampler.ensemble!r}")
    return ValidationConfig(validate, workflow)


def load_validation(path) -> ValidationConfig:
    """Read and validate a ``slhmc validate`` TOML config file."""
    path = Path(path)
    config = validation_from_dict(_read_toml(path), source=str(path))
    return dataclasses.replace(config, workflow=_anchored(config.workflow, path))


def validate_path() -> Path:
    """The embedded default ``slhmc validate`` config (the quickstart molecule, PySCF PBE)."""
    return Path(__file__).parents[1] / "data" / "validate.toml"


def quickstart_path() -> Path:
    """The embedded quickstart config (shipped inside the package)."""
    return Path(__file__).parents[1] / "data" / "quickstart.toml"


def to_toml(config: WorkflowConfig) -> str:
    """The config as TOML (every key, defaults included): what a run directory keeps and compares."""
    lines = []
    for name in _tables():
        obj = getattr(config, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(obj):
            if name in _RESERVED and f.name in _RESERVED[name]:
                continue
            value = getattr(obj, f.name)
            lines.append(f"{f.name} = {'false' if value is None else toml_value(value)}")  # false: off (None)
        lines.append("")
    return "\n".join(lines)


def validation_to_toml(config: ValidationConfig) -> str:
    """The validation config as TOML: the workflow's tables (:func:`to_toml`), then [validate]."""
    v = config.validate
    return to_toml(config.workflow) + "[validate]\n" + "".join(
        f"{f.name} = {'false' if getattr(v, f.name) is None else toml_value(getattr(v, f.name))}\n"
        for f in dataclasses.fields(v))


def toml_value(v) -> str:
    """One TOML value: a bool, number, string, list or inline table (None has no TOML form: write false)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")
