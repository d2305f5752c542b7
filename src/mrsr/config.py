"""Loading and validating the workflow configuration (config.yaml, config/paper.yaml).

The JSON Schema lives in workflow/schemas/config.schema.yaml (the package reaches it through a
symlink). Errors name the offending key or file, so a run stops at once with something actionable.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
# JSON Schema counts 32.0 as an integer (same number); Python code does not (range(32.0) raises), so
# a setting that passed validation failed an hour into training. Here an integer is an int.
_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


class ConfigError(ValueError):
    """A configuration that cannot be run, naming the key or file at fault."""


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict[str, Any], base_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate against the schema and, given ``base_dir``, check the folders it names there.

    Raises:
        ConfigError: naming the first offending key (schema) or file (missing data folder).
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = Validator(schema)
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
        folder = base / data.get("sample_dir", "data/btp-sample")
        if not folder.is_dir():
            raise ConfigError(f"config key 'data.sample_dir': folder {folder} does not exist")
    if data["source"] == "local":
        if not data.get("local_dir"):
            raise ConfigError("config key 'data.local_dir': required when data.source is 'local'")
        if base is not None and not (base / data["local_dir"]).is_dir():
            raise ConfigError(f"config key 'data.local_dir': folder {base / data['local_dir']} does not exist")
    for scale in config["scales"]:
        if f"x{scale}" not in config["patches"]:
            raise ConfigError(f"config key 'patches.x{scale}': missing although scale {scale} is in 'scales'")
    for i, exp in enumerate(config["experiments"]):
        from mrsr.models import MODEL_REGISTRY  # deferred: torch import only when needed

        spec = MODEL_REGISTRY.get(exp["model"])
        if spec is None:
            raise ConfigError(
                f"config key 'experiments.{i}.model': unknown model {exp['model']!r}; known: {sorted(MODEL_REGISTRY)}"
            )
        if exp.get("strategy") not in spec.strategies:
            raise ConfigError(
                f"config key 'experiments.{i}.strategy': {exp.get('strategy')!r} not one of {spec.strategies}"
            )
        for s in exp["scales"]:
            if s not in config["scales"]:
                raise ConfigError(f"config key 'experiments.{i}.scales': scale {s} is not in 'scales' "
                                  f"{config['scales']} (no patches are made for it); add it there or remove it here")
            if s not in spec.scales:
                raise ConfigError(f"config key 'experiments.{i}.scales': {exp['model']} has no x{s} variant "
                                  f"(it has {list(spec.scales)})")
    return config


def load_config(path: str | Path, base_dir: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a YAML config file (folders it names are checked when ``base_dir`` is given)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return validate_config(config, base_dir)


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

    @classmethod
    def from_name(cls, name: str) -> Job:
        parts = name.split("_")
        scale = int(parts[-1].lstrip("x"))
        return cls(parts[0], parts[1] if len(parts) == 3 else None, scale)


def training_jobs(config: dict[str, Any]) -> list[Job]:
    """Every (model, strategy, scale) the config trains, in a stable order."""
    jobs = [
        Job(exp["model"], exp.get("strategy"), s) for exp in config["experiments"] for s in exp["scales"]
    ]
    return list(dict.fromkeys(jobs))


def job_train_settings(config: dict[str, Any], job: Job) -> dict[str, Any]:
    """The ``train`` section for one job: the global settings with its experiment's overrides.

    The first experiment listing the job's (model, strategy, scale) supplies the overrides, so a
    quick profile can give a cheap baseline a different budget without an if-chain in the code.
    """
    settings = dict(config["train"])
    for exp in config["experiments"]:
        if exp["model"] == job.model and exp.get("strategy") == job.strategy and job.scale in exp["scales"]:
            settings.update(exp.get("train") or {})
            break
    return settings


def border_pixels(config: dict[str, Any], scale: int) -> int:
    border = config["evaluate"].get("border", "scale")
    return scale if border == "scale" else int(border)


def model_options(config: dict[str, Any], model: str) -> dict[str, Any]:
    return dict(config.get("model", {}).get(model, {}) or {})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfile", nargs="?", default="config.yaml")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.configfile, base_dir=Path.cwd())  # paths are relative to the repository
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{args.configfile}: valid; {len(training_jobs(config))} training jobs")
    return 0
