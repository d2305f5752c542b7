"""A config error stops the run at once, naming the key or file."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from mrsr.config import (SCHEMA_PATH, ConfigError, Job, JobError, config_schema, load_config, training_jobs,
                         validate_config)
from mrsr.models import MODEL_REGISTRY
from mrsr.modelspec import GROUP_NAMES, MODEL_SPECS, ModelSpec, register


def test_default_and_paper_configs_are_valid(root, default_config):
    paper = load_config(root / "config" / "paper.yaml", base_dir=root)
    assert len(training_jobs(paper)) == 18 and paper["train"]["epochs"] == 100
    validate_config(default_config, base_dir=root)
    assert [j.name for j in training_jobs(default_config)][:3] == ["proposed_multi_x2", "proposed_multi_x3", "proposed_multi_x4"]
    assert Job.from_name("proposed_multi_x3") == Job("proposed", "multi", 3)
    assert Job.from_name("srcnn_x4") == Job("srcnn", None, 4)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c["train"].update(learning_rate=0.1), r"unknown key under 'train'.*learning_rate"),
        (lambda c: c["train"].update(lr="fast"), r"config key 'train.lr': 'fast' is not of type 'number'"),
        (lambda c: c.pop("split"), r"missing key.*'split'"),
        (lambda c: c["data"].update(source="ftp"), r"config key 'data.source'"),
        (lambda c: c["data"].update(sample_dir="no/such/folder"), r"data.sample_dir.*no/such/folder"),
        (lambda c: c["data"].update(source="local", local_dir="missing-dir"), r"data.local_dir.*missing-dir"),
        (lambda c: c["experiments"].append({"model": "vdsr", "scales": [2]}), r"experiments.\d+.model.*unknown model 'vdsr'"),
        (lambda c: c["experiments"].append({"model": "proposed", "strategy": "triple", "scales": [2]}), r"experiments.\d+.strategy"),
        (lambda c: c["experiments"].append({"model": "fscwn", "scales": [3]}), r"experiments.\d+.scales.*supports scales 2, not 3"),
        (lambda c: c["model"].update(decnn={"residual_init": "ones"}), r"config key .model.decnn.residual_init."),
        (lambda c: c["experiments"][0].update(train={"epochs": 0}), r"config key .experiments.0.train.epochs."),
        # settings that passed the schema and failed late
        (lambda c: c["train"].update(batch_size=32.0), r"'train.batch_size': 32.0 is not of type 'integer'"),
        (lambda c: c["train"].update(batch_size=1e9), r"'train.batch_size': 1000000000.0 is not of type 'integer'"),
        (lambda c: c["train"].update(batch_size=10**9), r"'train.batch_size': 1000000000 is greater than the maximum"),
        (lambda c: c["train"].update(lr=1e6), r"'train.lr': 1000000.0 is greater than the maximum of 10"),
        (lambda c: c["experiments"][0].update(train={"epochs": 2.0}), r"'experiments.0.train.epochs': 2.0 is not of type"),
        (lambda c: c["patches"]["x2"].update(lr_size=14.5), r"'patches.x2.lr_size': 14.5 is not of type 'integer'"),
        (lambda c: c.update(scales=[2]), r"'experiments.0.scales': scale 3 is not in 'scales' \[2\]"),
        (lambda c: c["experiments"].append({"model": "bicubic", "scales": [2]}), r"experiments.\d+.model.*no learned parameters"),
        (lambda c: c.update(leakage={"job": "Proposed_multi_x2"}), r"'leakage.job': Proposed_multi_x2: not a job name"),
        (lambda c: c.update(leakage={"job": "fscwn_x3"}), r"'leakage.job': fscwn_x3: .*supports scales 2, not 3"),
    ],
)
def test_config_errors_name_the_key_or_file(root, default_config, mutate, message):
    cfg = copy.deepcopy(default_config)
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, base_dir=root)


def test_loading_fills_in_the_schemas_defaults(root, tmp_path):
    """The schema holds every default: a profile without the optional keys loads complete, filled from it."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    raw = yaml.safe_load((root / "config.yaml").read_text())
    short = copy.deepcopy(raw)
    del short["timing"], short["leakage"], short["train"]["momentum"], short["train"]["val_slices"]
    short["evaluate"], short["data"] = {}, {"source": "sample"}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(short))
    config = load_config(tmp_path / "short.yaml")
    defaults = lambda section: {k: v["default"] for k, v in section["properties"].items()}  # noqa: E731
    assert config["timing"] == defaults(schema["timing"]) and config["evaluate"] == defaults(schema["evaluate"])
    assert config["leakage"] is None and config["data"]["tcia"] == defaults(schema["data"]["properties"]["tcia"])
    assert config["data"]["sample_dir"] == "data/btp-sample" and config["patches"]["x2"]["max_patches"] is None
    assert {k: config["train"][k] for k in ("momentum", "val_slices")} == {"momentum": 0.9, "val_slices": 0}
    # what the profile gives is kept; an experiment's `train:` holds only its overrides (a default
    # there would override the global section)
    assert config["train"]["lr"] == raw["train"]["lr"] and config["scales"] == raw["scales"]
    assert [e.get("train") for e in config["experiments"]] == [e.get("train") for e in raw["experiments"]]
    # every training key has a value (TrainConfig has no defaults of its own), and no default is shared
    assert set(schema["train"]["properties"]) | {"optimizer", "lr", "batch_size", "epochs", "seeds"} == \
        set(yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]["train_settings"]["properties"]) - {"seed"}
    config["timing"]["sizes"].append(512)
    assert load_config(tmp_path / "short.yaml")["timing"]["sizes"] == ["native", 256]


def test_importing_the_config_imports_no_torch():
    """Checking a profile (mrsr check-config, the Snakefile) needs the model spec, not the models."""
    code = "import sys, mrsr.config, mrsr.workflow_support; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_model_spec_refuses_a_second_entry_of_one_name(monkeypatch):
    monkeypatch.setattr("mrsr.modelspec.MODEL_SPECS", dict(MODEL_SPECS))
    with pytest.raises(ValueError, match="registered twice"):
        register(ModelSpec("srcnn", "mrsr.models.srcnn", "SRCNN", "SRCNN again"))
    with pytest.raises(ValueError, match="lower-case letters and digits"):
        register(ModelSpec("my_net", "mrsr.models.mynet", "MyNet", "Mine"))


def test_every_model_class_takes_its_facts_from_its_spec_entry():
    """The registry is the spec's: same names, same order, and each class's attributes are its entry's."""
    assert list(MODEL_REGISTRY) == list(MODEL_SPECS)
    for name, cls in MODEL_REGISTRY.items():
        spec = MODEL_SPECS[name]
        assert cls.spec is spec and cls.__name__ == spec.class_name and cls.__module__ == spec.module
        assert (cls.scales, cls.strategies, cls.groups, cls.gpu_slots) == (spec.scales, spec.strategies, spec.groups,
                                                                           spec.gpu_slots)


def test_schema_model_options_are_the_constructors_keyword_options():
    """One set of options per model: the schema's ``model.<name>`` (types, ranges, choices: the spec's
    ``options``) and the class's keyword-only constructor parameters (names, defaults) agree, so
    neither can gain an option, or a default the other refuses, unnoticed."""
    import inspect

    import jsonschema

    from mrsr.models import build_model

    assert "properties" not in yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["model"]  # stated once: the spec
    models = config_schema()["properties"]["model"]["properties"]
    assert set(models) == set(MODEL_REGISTRY)
    for name, cls in MODEL_REGISTRY.items():
        section = models[name]
        params = {p.name: p for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY}
        assert section["additionalProperties"] is False, name
        assert set(section.get("properties", {})) == set(params), f"model.{name}: schema and constructor differ"
        spec = MODEL_REGISTRY[name]
        for option, param in params.items():
            assert param.default is not param.empty, f"{name}({option}=...) has no default"
            default = list(param.default) if isinstance(param.default, tuple) else param.default
            jsonschema.validate(default, section["properties"][option])  # the schema accepts the default
            for choice in section["properties"][option].get("enum", []):  # and the constructor every choice
                build_model(name, spec.scales[0], spec.strategies[0], **{option: choice})


def test_schema_names_the_models_parameter_groups():
    settings = yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]["train_settings"]["properties"]
    assert settings["param_groups"]["propertyNames"]["enum"] == list(GROUP_NAMES)
    assert settings["init"]["propertyNames"]["enum"] == ["all", *GROUP_NAMES]
    assert all(set(cls.groups) <= set(GROUP_NAMES) for cls in MODEL_REGISTRY.values())


def test_missing_or_broken_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_registered_job_name_parses_back():
    for model, spec in MODEL_REGISTRY.items():
        for strategy in spec.strategies:
            for scale in spec.scales:
                job = Job(model, strategy, scale)
                assert Job.from_name(job.name) == job


@pytest.mark.parametrize(
    "name,part,fragments",
    [
        ("nosuch_x2", "model", ["unknown model 'nosuch'", "bicubic, decnn, espcn"]),
        ("proposed_multi_x5", "scale", ["supports scales 2, 3, 4, not 5"]),
        ("fscwn_x3", "scale", ["supports scales 2, not 3"]),
        ("proposed_x2", "strategy", ["needs a strategy: one of single, double, multi"]),
        ("proposed_triple_x2", "strategy", ["has no strategy 'triple'; one of single, double, multi"]),
        ("srcnn_multi_x2", "strategy", ["takes no strategy"]),
        ("proposed", "name", ["not a job name", "MODEL_xSCALE or MODEL_STRATEGY_xSCALE"]),
        ("proposed_multi_2", "name", ["not a job name"]),
        ("a_b_c_x2", "name", ["not a job name"]),
    ],
)
def test_job_names_are_checked_against_the_registry(name, part, fragments):
    with pytest.raises(JobError) as error:
        Job.from_name(name)
    message = str(error.value)
    assert error.value.part == part and message.startswith(f"{name}: ")
    assert all(f in message for f in fragments), message


@pytest.mark.slow
def test_snakemake_stops_at_once_naming_the_key(root, default_config, tmp_path):
    cfg = copy.deepcopy(default_config)
    cfg["train"]["epochs"] = "many"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "all", "--configfile", str(path)],
        cwd=root, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "config key 'train.epochs'" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "recipe,message",
    [
        ({"param_groups": {"last": -0.1}}, r"'experiments.3.train.param_groups.last': -0.1 is less than the minimum"),
        ({"param_groups": {"head": 0.1}}, r"'experiments.3.train.param_groups'.*'head'"),
        ({"param_groups": {"last": "slow"}}, r"'experiments.3.train.param_groups.last': 'slow' is not of type"),
        ({"param_groups": {"fusion": 0.1}}, r"'experiments.3.train.param_groups.fusion': model 'srcnn' has no parameter "
                                            r"group 'fusion'.*its groups: body, last"),
        ({"init": {"last": "ones"}}, r"'experiments.3.train.init.last': 'ones' is not one of"),
        ({"init": {"upsample": "he"}}, r"'experiments.3.train.init.upsample': model 'srcnn' has no parameter group"),
        ({"init": {"last": "bicubic"}}, r"'experiments.3.train.init.last': 'bicubic' initialises a learned upsampling"),
        ({"init_std": 0}, r"'experiments.3.train.init_std': 0 is less than or equal to the minimum"),
        ({"schedule": "linear"}, r"'experiments.3.train.schedule': 'linear' is not one of"),
        ({"lr_min_ratio": 2}, r"'experiments.3.train.lr_min_ratio': 2 is greater than the maximum of 1"),
        ({"warmup_epochs": -1}, r"'experiments.3.train.warmup_epochs': -1 is less than the minimum"),
        ({"warmup_epochs": 1.5}, r"'experiments.3.train.warmup_epochs': 1.5 is not of type 'integer'"),
        ({"loss_reduction": "max"}, r"'experiments.3.train.loss_reduction': 'max' is not one of"),
        ({"recipe": ""}, r"'experiments.3.train.recipe'"),
    ],
)
def test_recipe_settings_are_checked(root, default_config, recipe, message):
    cfg = copy.deepcopy(default_config)
    assert cfg["experiments"][3]["model"] == "srcnn"
    cfg["experiments"][3]["train"] = {**(cfg["experiments"][3].get("train") or {}), **recipe}
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, base_dir=root)


def test_a_global_group_that_some_model_lacks_names_the_global_key(root, default_config):
    cfg = copy.deepcopy(default_config)
    cfg["train"]["param_groups"] = {"fusion": 0.5}  # proposed/multi has it; srcnn does not
    bad = next(i for i, e in enumerate(cfg["experiments"]) if "param_groups" not in (e.get("train") or {})
               and e["model"] != "proposed")
    with pytest.raises(ConfigError, match=rf"'train.param_groups.fusion': model .* \(experiment {bad}\)"):
        validate_config(cfg, base_dir=root)
