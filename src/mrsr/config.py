"""Loading and validating the workflow configuration (config.yaml, config/paper.yaml), and job names.

The JSON Schema lives in workflow/schemas/config.schema.yaml (the package reaches it through a
symlink); it holds every setting's default, which validation fills in, so a validated config is
complete and no code carries fallbacks of its own. Errors name the offending key or file, so a run
stops at once with something actionable.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mrsr.errors import UsageError
from mrsr.modelspec import MODEL_SPECS, spec_of

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# JSON Schema counts 32.0 as an integer (same number); Python code does not (range(32.0) raises), so
# a setting that passed validation failed an hour into training. Here an integer is an int.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
_Checker = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def _fill_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Any:
    """The ``properties`` keyword, first setting each absent property that has a ``default:``.

    As Snakemake's ``validate(config, schema, set_default=True)`` (the jsonschema FAQ's recipe), with
    a copy of each default (a list default must not be shared between configs) and only on mappings.
    """
    if validator.is_type(instance, "object"):
        for name, subschema in properties.items():
            if "default" in subschema and name not in instance:
                instance[name] = copy.deepcopy(subschema["default"])
    yield from _Checker.VALIDATORS["properties"](validator, properties, instance, schema)


# Validates and fills in the schema's defaults, in place.
Validator = jsonschema.validators.extend(_Checker, {"properties": _fill_defaults})


class ConfigError(UsageError, ValueError):
    """A configuration that cannot be run, naming the key or file at fault."""


class JobError(UsageError, ValueError):
    """A (model, strategy, scale) the model registry does not have, or a malformed job name.

    Attributes:
        part: what is at fault: ``"model"``, ``"strategy"``, ``"scale"`` or ``"name"``.
    """

    def __init__(self, message: str, part: str) -> None:
        super().__init__(message)
        self.part = part


def check_model(model: str, strategy: str | None = None, scale: int | None = None) -> None:
    """Check a model name, its strategy and (if given) a scale against :data:`mrsr.modelspec.MODEL_SPECS`.

    Args:
        model: registry name.
        strategy: the strategy (None for models without strategies).
        scale: the scale, or None to check only model and strategy.

    Raises:
        JobError: naming the first part at fault and listing what the registry allows.
    """
    spec = MODEL_SPECS.get(model)
    if spec is None:
        raise JobError(f"unknown model {model!r}; known: {', '.join(sorted(MODEL_SPECS))}", "model")
    if strategy not in spec.strategies:
        allowed = ", ".join(s for s in spec.strategies if s is not None)
        if not allowed:
            problem = f"takes no strategy, but {strategy!r} was given"
        elif strategy is None:
            problem = f"needs a strategy: one of {allowed}"
        else:
            problem = f"has no strategy {strategy!r}; one of {allowed}"
        raise JobError(f"model {model!r} {problem}", "strategy")
    if scale is not None and scale not in spec.scales:
        raise JobError(f"model {model!r} supports scales {', '.join(map(str, spec.scales))}, not {scale}", "scale")


def trainable(model: str) -> bool:
    """Whether a registered model has learned parameters, i.e. can be a training job (all but bicubic):
    :attr:`mrsr.modelspec.ModelSpec.trainable`.

    Args:
        model: registry name.
    """
    return spec_of(model).trainable


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict[str, Any], base_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate against the schema, fill in its defaults and, given ``base_dir``, check the folders
    the config names there.

    Args:
        config: the parsed profile; completed in place with the schema's ``default:`` values (as
            Snakemake's ``validate`` does with the workflow's ``config``).
        base_dir: the folder data paths are relative to; None skips the folder checks.

    Returns:
        ``config``, complete.

    Raises:
        ConfigError: naming the first offending key (schema) or file (missing data folder).
    """
    validator = Validator(config_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        if first.validator == "additionalProperties":
            raise ConfigError(f"config: unknown key under '{_key_path(first)}': {first.message}")
        if first.validator == "required":
            raise ConfigError(f"config: missing key under '{_key_path(first)}': {first.message}")
        raise ConfigError(f"config key '{_key_path(first)}': {first.message}")
    data = config["data"]
    base = Path(base_dir) if base_dir is not None else None
    if base is not None and data["source"] == "sample":
        folder = base / data["sample_dir"]
        if not folder.is_dir():
            raise ConfigError(f"config key 'data.sample_dir': folder {folder} does not exist")
    if data["source"] == "local":
        if not data["local_dir"]:
            raise ConfigError("config key 'data.local_dir': required when data.source is 'local'")
        if base is not None and not (base / data["local_dir"]).is_dir():
            raise ConfigError(f"config key 'data.local_dir': folder {base / data['local_dir']} does not exist")
    for scale in config["scales"]:
        if f"x{scale}" not in config["patches"]:
            raise ConfigError(f"config key 'patches.x{scale}': missing although scale {scale} is in 'scales'")
    for key, section in [("train", config["train"])] + [
            (f"experiments.{i}.train", exp.get("train") or {}) for i, exp in enumerate(config["experiments"])]:
        if "seed" in section and "seeds" in section:
            raise ConfigError(f"config key '{key}.seeds': give either seed (one) or seeds (a list), not both")
    for i, exp in enumerate(config["experiments"]):
        try:
            for s in exp["scales"] or [None]:
                check_model(exp["model"], exp.get("strategy"), s)
        except JobError as exc:
            key = "scales" if exc.part == "scale" else exc.part
            raise ConfigError(f"config key 'experiments.{i}.{key}': {exc}") from exc
        if not trainable(exp["model"]):
            raise ConfigError(f"config key 'experiments.{i}.model': {exp['model']!r} has no learned parameters to "
                              "train (bicubic is evaluated at every scale without an experiment)")
        for s in exp["scales"]:
            if s not in config["scales"]:
                raise ConfigError(f"config key 'experiments.{i}.scales': scale {s} is not in 'scales' "
                                  f"{config['scales']} (no patches are made for it); add it there or remove it here")
        check_recipe_groups(exp["model"], config["train"], exp.get("train") or {}, i)
    leakage = config["leakage"]
    if leakage:
        try:
            job = Job.from_name(leakage["job"])
        except JobError as exc:
            raise ConfigError(f"config key 'leakage.job': {exc}") from exc
        if job not in training_jobs(config):
            raise ConfigError(f"config key 'leakage.job': {job.name} is not a training job of 'experiments' "
                              "(the check compares it with its own run on the series split)")
        if config["split"]["by"] != "series":
            raise ConfigError("config key 'leakage': the check compares the split by series with one by patient, "
                              "but split.by is already 'patient'; set leakage: null")
    return config


def config_schema() -> dict[str, Any]:
    """The configuration's JSON Schema: workflow/schemas/config.schema.yaml with what the model spec
    states filled in from :data:`mrsr.modelspec.MODEL_SPECS`: the ``model`` section's ``properties``
    (each model's ``options``) and the strategies an experiment may name."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    schema["properties"]["model"]["properties"] = {
        name: {"type": "object", "additionalProperties": False, "properties": copy.deepcopy(spec.options)}
        for name, spec in MODEL_SPECS.items()}
    strategies = sorted({s for spec in MODEL_SPECS.values() for s in spec.strategies if s is not None})
    schema["properties"]["experiments"]["items"]["properties"]["strategy"]["enum"] = [*strategies, None]
    return schema


def check_recipe_groups(model: str, global_train: dict[str, Any], overrides: dict[str, Any], index: int) -> None:
    """Check that ``param_groups`` and ``init`` name only groups ``model`` has (its spec's ``groups``), and
    that ``bicubic`` initialises only an ``upsample`` group.

    Args:
        model: the experiment's registry name.
        global_train: the ``train`` section; ``overrides``: the experiment's ``train:``, which
            replaces either mapping whole.
        index: the experiment's position, for the key in the message.

    Raises:
        ConfigError: naming the key, the model and the groups it has.
    """
    groups = spec_of(model).groups
    for field in ("param_groups", "init"):
        where = f"experiments.{index}.train" if field in overrides else "train"
        for name, value in ((overrides if field in overrides else global_train).get(field) or {}).items():
            if name != "all" and name not in groups:
                raise ConfigError(f"config key '{where}.{field}.{name}': model {model!r} has no parameter group "
                                  f"{name!r} (experiment {index}); its groups: {', '.join(groups) or 'none'}")
            if field == "init" and value == "bicubic" and name != "upsample":
                raise ConfigError(f"config key '{where}.init.{name}': 'bicubic' initialises a learned upsampling "
                                  "(group 'upsample') only")


def train_defaults() -> dict[str, Any]:
    """The schema's defaults of the global ``train`` section (the settings a profile may leave out)."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    return {k: v["default"] for k, v in schema["properties"]["train"]["properties"].items() if "default" in v}


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_config(path: str | Path, base_dir: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a YAML config file (folders it names are checked when ``base_dir`` is given).

    In a workflow job, MRSR_CONFIG_SHA256 holds the digest of the profile file when the run was
    planned; a file edited since then is refused, so a job never runs on settings other than
    those Snakemake compared when it decided to run it.

    Raises:
        ConfigError: starting with the file's path: missing, a folder, unreadable, not YAML,
            edited since the workflow run was planned, or invalid (then naming the key too).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file does not exist")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    expected = os.environ.get("MRSR_CONFIG_SHA256")
    if expected and file_sha256(path) != expected:
        raise ConfigError(f"{path}: config file changed after this workflow run was planned; run snakemake again")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:  # unreadable (permissions) or a binary file
        raise ConfigError(f"{path}: config file cannot be read ({exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return validate_config(config, base_dir)
    except ConfigError as exc:  # name the file too: a command may read more than one config
        raise ConfigError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class Job:
    """One training job: a (model, strategy, scale) cell of Tables 1-3."""

    model: str
    strategy: str | None
    scale: int

    @property
    def name(self) -> str:
        """File stem of the job's outputs, e.g. ``proposed_multi_x2`` or ``srcnn_x3``."""
        return f"{self.model}_{self.strategy}_x{self.scale}" if self.strategy else f"{self.model}_x{self.scale}"

    @property
    def gpu_slots(self) -> int:
        """Its share of one GPU when training jobs share a card (rule ``train``'s ``gpu_slots``)."""
        return spec_of(self.model).gpu_slots

    @property
    def heavy(self) -> bool:
        """Whether its model is heavy (:attr:`mrsr.modelspec.ModelSpec.heavy`)."""
        return spec_of(self.model).heavy

    @classmethod
    def from_name(cls, name: str) -> Job:
        """Parse and check a job name: ``MODEL_xSCALE`` or ``MODEL_STRATEGY_xSCALE``.

        Args:
            name: e.g. ``proposed_multi_x2`` or ``srcnn_x3``.

        Raises:
            JobError: the name is malformed, or names a model, strategy or scale the registry lacks
                (the message lists what is valid).
        """
        match = _JOB_NAME.fullmatch(name)
        if match is None:
            raise JobError(f"{name}: not a job name; expected MODEL_xSCALE or MODEL_STRATEGY_xSCALE, "
                           "e.g. proposed_multi_x2 or srcnn_x3", "name")
        model, strategy, scale = match["model"], match["strategy"], int(match["scale"])
        try:
            check_model(model, strategy, scale)
        except JobError as exc:
            raise JobError(f"{name}: {exc}", exc.part) from exc
        return cls(model, strategy, scale)


# Registry names and strategies contain no underscore, so the name splits unambiguously.
_JOB_NAME = re.compile(r"(?P<model>[a-z0-9]+)(?:_(?P<strategy>[a-z0-9]+))?_x(?P<scale>[0-9]+)")


def training_jobs(config: dict[str, Any]) -> list[Job]:
    """Every (model, strategy, scale) the config trains, in a stable order."""
    jobs = [
        Job(exp["model"], exp.get("strategy"), s) for exp in config["experiments"] for s in exp["scales"]
    ]
    return list(dict.fromkeys(jobs))


def _experiment_train(config: dict[str, Any], job: Job) -> dict[str, Any]:
    """The ``train`` overrides of the first experiment listing the job's (model, strategy, scale)."""
    for exp in config["experiments"]:
        if exp["model"] == job.model and exp.get("strategy") == job.strategy and job.scale in exp["scales"]:
            return dict(exp.get("train") or {})
    return {}


def job_seeds(config: dict[str, Any], job: Job) -> list[int]:
    """The training seeds of ``job``: each is a run of its own (weights under
    :func:`mrsr.workflow_support.seed_dir`).

    ``train.seeds`` (a list) or ``train.seed`` (one), from the job's experiment if it names either,
    else from the global ``train`` section; neither: seed 0. The first seed's run is the job's
    representative (Table 3, Figure 3, training curves, ``mrsr upscale`` examples).
    """
    for section in (_experiment_train(config, job), config["train"]):
        if "seeds" in section:
            return [int(s) for s in section["seeds"]]
        if "seed" in section:
            return [int(section["seed"])]
    return [0]


def job_train_settings(config: dict[str, Any], job: Job, seed: int | None = None) -> dict[str, Any]:
    """The ``train`` section for one run of a job: the global settings with its experiment's overrides.

    The first experiment listing the job's (model, strategy, scale) supplies the overrides, so a
    quick profile can give a cheap baseline a different budget without an if-chain in the code.
    The seed list is resolved to one ``seed``: ``seed`` if given, else the job's first seed
    (:func:`job_seeds`); ``seeds`` is dropped, so a run's settings do not change when another seed
    is added to the list.
    """
    seeds = job_seeds(config, job)
    settings = dict(config["train"])
    settings.update(_experiment_train(config, job))
    settings.pop("seeds", None)
    settings["seed"] = seeds[0] if seed is None else int(seed)
    return settings


def leakage_job(config: dict[str, Any]) -> Job | None:
    """The job of the split-leakage check (``leakage.job``), or None when the check is off."""
    leakage = config["leakage"]
    return Job.from_name(leakage["job"]) if leakage else None


def border_pixels(config: dict[str, Any], scale: int) -> int:
    """Pixels cropped at each border before the metrics (``evaluate.border``: ``scale`` or a number)."""
    border = config["evaluate"]["border"]
    return scale if border == "scale" else int(border)


def model_options(config: dict[str, Any], model: str) -> dict[str, Any]:
    """``model.<model>``: the options the config gives that model's constructor (none: its own defaults)."""
    return dict(config["model"].get(model) or {})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfile", nargs="?", default="config.yaml",
                        help="YAML config to check (default: config.yaml); data folders are resolved "
                             "against the current folder")


def run(args: argparse.Namespace) -> int:
    # A ConfigError reaches mrsr.cli.main, which prints it as one line and exits 2.
    config = load_config(args.configfile, base_dir=Path.cwd())  # paths are relative to the repository
    jobs = training_jobs(config)
    runs = sum(len(job_seeds(config, job)) for job in jobs)
    print(f"{args.configfile}: valid; {len(jobs)} training jobs, {runs} training runs with their seeds")
    return 0
