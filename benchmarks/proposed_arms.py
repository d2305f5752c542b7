"""The proposed net's start compared on validation, same seed, data and step budget (the optimiser and
rate were compared later, at equal compute and for every heavy network: benchmarks/heavy_recipes.py).

Each arm is config/paper.yaml with one change to the proposed net's recipe, trained by the real
loop (:func:`mrsr.train.train`) on the paper profile's x2 patches, multi strategy, seed 0, batch 128,
for ``--steps`` steps with the validation PSNR (the held-out training-series slices, never the test
split) every ``--every`` steps. The learning rate is held at each arm's starting rate for the
comparison (the paper's first decay comes after 20 epochs, ~2,200 steps, far past this window).

  python benchmarks/proposed_arms.py --patches data/prepared/paper/patches/x2.npz --out runs/arms
  python benchmarks/proposed_arms.py --plot-only --out runs/arms   # the PNG and CSV for docs/models.md

Arms (``--arms`` picks some):
  paper-as-was      the paper's SGD 0.1 (momentum 0.9, wd 1e-4, clip 0.4/lr) with torch's kaiming_normal_
                    on the transposed convolutions (fan-in from the output maps, as torch.nn.init counts it)
  paper             the same with the fan-correct He initialisation (mrsr.models.blocks.he_normal_)
  paper-deconv0.1   + the feature deconvolution at 0.1 x the rate (param_groups {last: 0.1})
  bicubic-zero      + the image deconvolution starting as bicubic and the feature deconvolution at zero
  adam1e-4          Adam 1e-4, no clipping (the heavy baselines' EDSR recipe), fan-correct He
  adam5e-4          Adam 5e-4, no clipping, feature deconvolution x0.1 (the light baselines' 10:1 ratio)
  <arm>-fp32        any arm in float32 (the others run the CPU fast path: bf16 where the CPU has it)
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

import mrsr.models.base as model_base
from mrsr.config import Job, load_config
from mrsr.train import NonFiniteLossError, train

ROOT = Path(__file__).resolve().parents[1]
JOB = Job("proposed", "multi", 2)

SGD_PAPER: dict[str, Any] = {}  # config/paper.yaml's global train section as it is
ARMS: dict[str, dict[str, Any]] = {
    "paper-as-was": {"train": SGD_PAPER, "torch_kaiming_deconv": True},
    "paper": {"train": SGD_PAPER},
    "paper-deconv0.1": {"train": {"param_groups": {"last": 0.1}}},
    "bicubic-zero": {"train": {"param_groups": {"last": 0.1}},
                     "model": {"image_deconv_init": "bicubic", "feature_deconv_init": "zero"}},
    "adam1e-4": {"train": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "clip_theta": None}},
    "adam5e-4": {"train": {"optimizer": "adam", "lr": 5e-4, "weight_decay": 0.0, "clip_theta": None,
                           "param_groups": {"last": 0.1}}},
}


def arm_config(base: dict[str, Any], arm: str, steps: int, every: int) -> tuple[dict[str, Any], bool]:
    """(the arm's whole config, whether it uses torch's kaiming on transposed convolutions)."""
    fp32 = arm.endswith("-fp32")
    spec = ARMS[arm.removesuffix("-fp32")]
    config = copy.deepcopy(base)
    exp = next(e for e in config["experiments"] if e["model"] == "proposed" and e.get("strategy") == "multi")
    exp["train"] = {**spec["train"], "epochs": steps // every, "steps_per_epoch": every,
                    "lr_step_epochs": 10 ** 6, "checkpoint_every_s": 10 ** 9, "seeds": [0]}
    if fp32:
        exp["train"]["amp"] = "off"
    # The paper's He start unless the arm says otherwise (config/paper.yaml now holds the chosen start).
    config["model"]["proposed"].update({"image_deconv_init": "he", "feature_deconv_init": "he", **spec.get("model", {})})
    return config, bool(spec.get("torch_kaiming_deconv"))


def torch_kaiming(layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """torch's kaiming_normal_ on every layer (a transposed convolution's
    fan-in taken from its output maps)."""
    nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def run_arm(arm: str, base: dict[str, Any], patches: Path, out: Path, steps: int, every: int) -> pd.DataFrame:
    config, old_init = arm_config(base, arm, steps, every)
    fan_correct = model_base.he_normal_
    if old_init:
        model_base.he_normal_ = torch_kaiming
    t0 = time.perf_counter()
    try:
        history = train(JOB, patches, out / f"{arm}.safetensors", config, seed=0)
    except NonFiniteLossError as exc:  # a diverged arm is a result: its curve ends there
        print(f"{arm}: {exc}")
        raise
    finally:
        model_base.he_normal_ = fan_correct
    meta = pd.read_json(out / f"{arm}.json", typ="series")
    frame = pd.DataFrame(history)
    frame.insert(0, "step", frame["epoch"] * every)
    frame.insert(0, "arm", arm)
    start = pd.DataFrame([{"arm": arm, "step": 0, "val_psnr": meta["initial_val_psnr"]}])
    frame = pd.concat([start, frame], ignore_index=True)
    frame["bicubic_val_psnr"] = meta["bicubic_val_psnr"]
    frame["wall_s"] = time.perf_counter() - t0
    frame.to_csv(out / f"{arm}.csv", index=False)
    return frame


def plot(out: Path, figure: Path) -> pd.DataFrame:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [pd.read_csv(p) for p in sorted(out.glob("*.csv")) if not p.name.endswith(".history.csv")]
    table = pd.concat(frames, ignore_index=True)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for arm, rows in table.groupby("arm", sort=False):
        ax.plot(rows["step"], rows["val_psnr"], marker="o", ms=3, label=arm,
                linestyle="--" if arm.endswith("-fp32") else "-")
    bicubic = table["bicubic_val_psnr"].iloc[0]
    ax.axhline(bicubic, color="grey", lw=1, ls=":", label=f"bicubic {bicubic:.2f} dB")
    ax.set_xlabel("optimiser steps (batch 128)")
    ax.set_ylabel("validation PSNR (dB), x2")
    ax.set_ylim(max(0.0, bicubic - 12), table["val_psnr"].max() + 0.5)
    ax.set_title("Proposed net (multi, x2): recipes on the paper profile's patches, seed 0")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)
    table.to_csv(figure.with_suffix(".csv"), index=False, float_format="%.4f")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--patches", type=Path, help="the paper profile's x2 patches (mrsr patches)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the arms' weights and histories")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help="arms to run (add -fp32 for float32)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=15, help="steps between validations")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "proposed_arms.png")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        base = load_config(args.config)
        base["train"]["threads"] = args.threads
        for arm in args.arms:
            if (args.out / f"{arm}.csv").exists():
                print(f"{arm}: done already")
                continue
            frame = run_arm(arm, base, args.patches, args.out, args.steps, args.every)
            print(f"{arm}: {frame['val_psnr'].iloc[-1]:.2f} dB after {args.steps} steps, {frame['wall_s'].iloc[0]:.0f} s",
                  flush=True)
    table = plot(args.out, args.figure)
    last = table.sort_values("step").groupby("arm").tail(1).set_index("arm")
    print(last[["step", "val_psnr", "bicubic_val_psnr"]].sort_values("val_psnr", ascending=False).to_string())


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
