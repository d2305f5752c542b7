"""``mrsr models --verify``: every shipped file, card and recipe checked, and (``--recompute``) every
card's test figures computed again from its weights on the embedded sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrsr.config import Job, job_train_settings, load_config, model_options, train_defaults
from mrsr.zoo.evaluation import SampleEvaluator, differences, figures_of, find_sample
from mrsr.zoo.manifest import Manifest, file_problems, read_manifest, read_shipped_sidecar, unlisted_files, zoo_dir

# Train settings that say where and how fast a run went, not what it learnt: left out of the recipe check.
RUN_ENVIRONMENT_KEYS = frozenset({"val_slices", "deterministic", "device", "threads", "amp", "channels_last",
                                  "compile", "checkpoint_every_s"})


def recipe_mismatches(sidecar: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Where a shipped sidecar's recipe differs from the profile's current one for its job and seed.

    Compared: the model options and every train setting but those of :data:`RUN_ENVIRONMENT_KEYS`.
    """
    job = Job.from_name(sidecar["job"])
    out = []
    if job not in {Job(e["model"], e.get("strategy"), s) for e in config["experiments"] for s in e["scales"]}:
        return [f"job {job.name} is not trained by profile {config['profile']}"]
    if (options := model_options(config, job.model)) != sidecar["options"]:
        out.append(f"model.{job.model}: {sidecar['options']} shipped, {options} in the profile")
    wanted = job_train_settings(config, job, seed=int(sidecar["seed"]))
    # A setting added after the network was trained is read as its schema default: every default
    # reproduces the training as it was before the setting existed.
    shipped = {**train_defaults(), **sidecar["train"]}
    for key in sorted(set(wanted) - RUN_ENVIRONMENT_KEYS):
        if shipped.get(key, "<absent>") != wanted[key]:
            out.append(f"train.{key}: {shipped.get(key, '<absent>')!r} shipped, {wanted[key]!r} in the profile")
    return out


def profile_file(profile: str) -> Path | None:
    """The committed file of ``profile`` in this clone (working folder first), None outside a clone."""
    name = "config.yaml" if profile == "quick" else f"config/{profile}.yaml"
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (base / name).is_file():
            return base / name
    return None


def _recipe_problems(manifest: Manifest, sidecars: dict[str, dict], config_path: Path | None,
                     notes: list[str]) -> list[str]:
    problems, configs = [], {}
    for name, sidecar in sidecars.items():
        path = config_path or profile_file(sidecar["profile"])
        if path is None:
            notes.append(f"{name}: recipe not checked: profile {sidecar['profile']}'s file is not here "
                         "(an installed copy); give --config")
            continue
        if path not in configs:
            configs[path] = load_config(path)
        config = configs[path]
        if sidecar["profile"] != config["profile"]:
            problems.append(f"{name}: trained with profile {sidecar['profile']}, {path} is {config['profile']}")
            continue
        problems += [f"{name}: {path}: {m}" for m in recipe_mismatches(sidecar, config)]
    return problems


def verify(config_path: Path | None = None, folder: Path | None = None, recompute: bool = False,
           sample: Path | None = None) -> tuple[list[str], list[str]]:
    """Every problem of the shipped networks, one line each, and notes on what was not checked.

    Checked: the manifest exists and reads; it lists every weights and sidecar file in the folder;
    each file matches its SHA-256; each card's figures are its sidecar's and belong to its weights;
    each recipe is its profile's (``config_path``, else the recorded profile's file where this is a
    clone); with ``recompute``, each card's test PSNR/SSIM is what its weights score on the sample.

    Returns:
        (problems, notes); no problems means verified.
    """
    manifest = read_manifest(folder)
    problems, notes, sidecars = unlisted_files(manifest, folder), [], {}
    if not manifest.models:
        problems.append(f"{zoo_dir(folder)}: the manifest lists no shipped network")
    for name, card in sorted(manifest.models.items()):
        files = file_problems(name, card, folder)
        problems += files
        if files:
            continue
        sidecars[name] = read_shipped_sidecar(name, folder)
        if sidecars[name]["test"] != card.test:
            problems.append(f"{name}: the manifest's test figures are not the sidecar's")
        if card.evaluation.weights_sha256 != card.weights.sha256:
            problems.append(f"{name}: its test figures were computed for other weights "
                            f"(SHA-256 {card.evaluation.weights_sha256[:12]}...)")
    problems += _recipe_problems(manifest, sidecars, config_path, notes)
    if recompute and sidecars:
        with SampleEvaluator(find_sample(sample)) as testset:
            for name in sidecars:
                card = manifest.models[name]
                figures = figures_of(testset, zoo_dir(folder) / card.weights.file, card.model, card.scale,
                                     card.evaluation)
                problems += [f"{name}: {line}" for line in differences(card.test, figures)]
                notes.append(f"{name}: recomputed test PSNR {figures['psnr']:.4f} dB (card {card.test['psnr']:.4f}), "
                             f"SSIM {figures['ssim']:.4f} (card {card.test['ssim']:.4f})")
    return problems, notes
