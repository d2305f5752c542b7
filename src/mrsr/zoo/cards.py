"""What ``mrsr models`` shows: the table of shipped networks and their Markdown model cards
(docs/model-zoo.md), every figure read from the manifest's cards and the shipped sidecars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrsr.zoo.manifest import FORMAT, NAME_RULE, Card, read_manifest, read_shipped_sidecar
from mrsr.zoo.shipping import BENCH_SIZE, SAMPLE_DATA

LIMITS = ("one sequence type (T1 post-contrast, brain)", "bicubic degradation only (LR = bicubic downscaling "
          "of the HR slice): real low-resolution acquisitions blur differently", "2-D, in-plane: slices are "
          "super-resolved one at a time, the slice thickness is unchanged", "six patients (two scanner vendors): "
          "trained and tested on the same small cohort, split by series, so a patient's anatomy may be in both")
INTENDED_USE = ("Research and teaching: reproducing and comparing MR super-resolution. Not for diagnosis or "
                "any clinical decision: a network can invent or remove detail, and none here is validated clinically.")


def retrain_command(sidecar: dict[str, Any]) -> str:
    """The Snakemake command that retrains a shipped network (its profile, seed and job)."""
    config = "config.yaml" if sidecar["profile"] == "quick" else f"config/{sidecar['profile']}.yaml"
    # The target before --configfile: snakemake's --configfile takes every value that follows it.
    return (f"snakemake --cores 2 models/{sidecar['profile']}/seed{sidecar['seed']}/{sidecar['job']}.safetensors "
            f"--configfile {config}")


def table(folder: Path | None = None) -> str:
    """``mrsr models``' table: one row per shipped network, the default of each scale marked."""
    manifest = read_manifest(folder)
    if not manifest.models:
        return "no shipped networks"
    best = {chosen["name"] for chosen in manifest.defaults.values()}
    cpus = sorted({e.cpu["cpu"] for e in manifest.models.values()})
    lines = [f"{'name':<14} {'scale':>5} {'params':>8} {'test PSNR':>9} {'gain':>7} {'CPU ms':>7}  default",
             f"{'':<14} {'':>5} {'':>8} {'dB':>9} {'dB':>7} {'/slice':>7}"]
    for name, e in manifest.models.items():
        lines.append(f"{name:<14} {'x' + str(e.scale):>5} {e.parameters:>8,} {e.test['psnr']:>9.2f} "
                     f"{e.test['gain_db']:>+7.2f} {e.cpu['ms_per_slice']:>7.1f}  "
                     f"{'yes (x' + str(e.scale) + ')' if name in best else ''}".rstrip())
    busy = max((e.cpu["other_load_cores"] or 0.0) for e in manifest.models.values())
    lines.append(f"Test PSNR and gain over bicubic on the sample's test split; CPU ms per {BENCH_SIZE}x{BENCH_SIZE} "
                 f"output slice (fp32) on {'; '.join(cpus)}"
                 + (f", measured while other processes kept up to {busy:.1f} cores busy (slower than idle)" if busy >= 0.5
                    else "") + ". `mrsr upscale --scale N` without --model runs the default.")
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _steady_time(samples: int | None, per_s: float | None) -> str:
    """The budget at the run's steady rate: wall time also holds whatever shared or paused the machine."""
    return f"; {_hours(samples / per_s)} at its steady {per_s:,.0f} samples/s" if samples and per_s else ""


def model_card(name: str, entry: Card, sidecar: dict[str, Any], default: bool) -> str:
    """One network's card in docs/model-zoo.md, every figure from its manifest entry and sidecar."""
    t, train, cpu, tr = sidecar["test"], sidecar["train"], entry.cpu, sidecar["training"]
    steps = (sidecar.get("recipe") or {}).get("steps_per_epoch") or train["steps_per_epoch"]
    samples = train["epochs"] * steps * train["batch_size"] if steps else None
    load = "" if cpu["other_load_cores"] is None else f", {cpu['other_load_cores']:.1f} other cores busy"
    return "\n".join([
        f"## {name}" + (f" (default at x{entry.scale})" if default else ""),
        "",
        f"- **Network**: {sidecar['model']}" + (f" ({sidecar['strategy']})" if sidecar["strategy"] else "")
        + f", x{entry.scale}, {entry.parameters:,} parameters; options {sidecar['options'] or 'none (defaults)'}",
        f"- **Test metrics** ({t['n_slices']} test slices of patients {', '.join(t['test_patients'])}): "
        f"PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.4f}; bicubic {t['bicubic_psnr']:.2f} dB, "
        f"{t['bicubic_ssim']:.4f}; gain {t['gain_db']:+.2f} dB, SSIM {t['ssim_gain']:+.4f}",
        f"- **Training data**: {sidecar['data']['description']}; {sidecar['data']['collection']}; licence "
        f"{sidecar['data']['licence']}; split by {sidecar['data']['split']['by']}, seed {sidecar['data']['split']['seed']}",
        f"- **Recipe**: {train['recipe']}",
        f"- **Budget**: {train['epochs']} epochs x {steps} steps x batch {train['batch_size']} = "
        f"{samples:,} samples" if samples else f"- **Budget**: {train['epochs']} epochs, batch {train['batch_size']}",
        f"- **Trained**: profile {sidecar['profile']}, seed {sidecar['seed']}, git {sidecar['git_revision']}, "
        f"{_hours(tr['seconds'])} wall time on {tr['machine']} (device {tr['device']}, torch {tr['torch']})"
        + _steady_time(samples, tr.get("steady_samples_per_s")),
        f"- **CPU time**: {cpu['ms_per_slice']:.1f} ms per {cpu['size']}x{cpu['size']} output slice, "
        f"{cpu['threads']} thread{'s' if cpu['threads'] != 1 else ''} on {cpu['cpu']}{load}",
        f"- **SHA-256**: `{entry.weights.sha256}` ({entry.weights.file})",
        f"- **Retrain**: `{retrain_command(sidecar)}`",
        f"- **Use**: `mrsr upscale --model {name} --out sr/ SCAN.nii.gz`",
        "",
    ])


def model_cards(folder: Path | None = None) -> str:
    """docs/model-zoo.md: the shared facts, then one card per shipped network (``mrsr models --cards``)."""
    manifest = read_manifest(folder)
    best = {chosen["name"] for chosen in manifest.defaults.values()}
    head = [
        "# Model zoo: the shipped networks",
        "",
        "Generated by `mrsr models --cards docs/model-zoo.md` from src/mrsr/zoo/manifest.json and the shipped "
        "sidecars (tests/test_zoo.py checks that this file is what they say). `mrsr models` lists the networks, "
        "`mrsr models --verify` checks the manifest, each file's SHA-256 and that each recipe is still its "
        "profile's; `mrsr models --verify --recompute` also evaluates every network again on the sample and "
        "compares with its card (to 0.01 dB).",
        "",
        f"**Manifest** (schema version {FORMAT}): per network a card (model, scale, parameters, the SHA-256 of its "
        "weights and sidecar, test figures, CPU time, and how the figures were computed: split, border crop, "
        "the SHA-256 of the weights evaluated); the default network of each scale with the message that chose "
        "it; a changelog. `mrsr models --add WEIGHTS` evaluates the weights itself on the sample's test split "
        "of their profile, so a card's figures belong to its bytes; it refuses a name already shipped unless "
        "`--replace` is given, and changes the zoo all at once or not at all. Names are " + NAME_RULE + ".",
        "",
        "**Defaults** (`mrsr upscale --scale N` without `--model`; changed only by "
        "`mrsr models --default NAME --message WHY`): "
        + "; ".join(f"x{s}: {d['name']} ({d['message']})" for s, d in sorted(manifest.defaults.items())) + ".",
        "",
        f"**Intended use**: {INTENDED_USE}",
        "",
        "**Known limits** (all networks): " + "; ".join(LIMITS) + ".",
        "",
        f"**Data**: {SAMPLE_DATA['collection']}, {SAMPLE_DATA['licence']}; cite "
        + " and ".join(SAMPLE_DATA["citations"]) + " (data/btp-sample/README.md).",
        "",
        "**Metrics**: PSNR and SSIM on the sample's test split, as `mrsr evaluate` computes them "
        "(docs/models.md); the gain is over bicubic interpolation on the same slices.",
        "",
    ]
    cards = [model_card(n, e, read_shipped_sidecar(n, folder), n in best) for n, e in manifest.models.items()]
    changes = ["## Changelog", "", *(f"- {line}" for line in manifest.changelog), ""]
    return "\n".join(head + cards + changes)
