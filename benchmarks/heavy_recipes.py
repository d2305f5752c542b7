"""Recipes for the heavy networks (the proposed net, de-CNN, FSCWN) compared on validation, fairly.

Every arm of a network is config/paper.yaml's job at x2 with one change to its recipe, trained by the
real loop (:func:`mrsr.train.train`) from the same start (each network's profile initialisation: the
proposed net's bicubic/zero deconvolutions, de-CNN's and FSCWN's zero last layer), the same seed (0)
and the same compute: ``--steps`` optimiser steps of the same number of LR pixels per batch (128
patches of 14 x 14, or 11 of 48 x 48: larger than the 39-pixel receptive field of the
proposed net's 19 convolutions, which a 14-pixel patch fills with zero padding). Each arm runs its whole
schedule inside the window (the paper's step schedule, lr / 10 every fifth of the run; cosine to 1 %),
so no arm is judged half-way down another's schedule. Validation: the PSNR of ``--val-slices`` whole
slices held out of the training series (never the test split), every ``--every`` steps, and at the
end slice by slice, so two arms are compared pairwise (mean difference and its 95 % t-interval over
the slices; differences inside the interval are noise).

  python benchmarks/heavy_recipes.py --store data/prepared/paper/store --split data/prepared/paper/split.csv \\
      --out runs/recipes [--models proposed decnn fscwn] [--arms adam2e-4-cos ...]
  python benchmarks/heavy_recipes.py --plot-only --out runs/recipes   # docs/figures/heavy_recipes.{png,csv}

The first arm listed for each network is its recipe before the study (every arm states its rate, so a
rerun does not depend on what config/paper.yaml chose since), the baseline of the paired comparison.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from mrsr.config import Job, border_pixels, load_config
from mrsr.data.patches import make_patches
from mrsr.data.split import read_split
from mrsr.io import atomic_path
from mrsr.train import NonFiniteLossError, train, validation_psnrs
from mrsr.weights import load_model

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
BASE_LR_SIZE, BASE_BATCH = 14, 128  # the paper's x2 patch and batch: the pixels per batch every arm keeps

# The proposed net's recipe before the study, spelled out (config/paper.yaml now holds the chosen one):
# the paper's SGD with the feature deconvolution at 0.1 x the rate.
PAPER_SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "clip_theta": 0.4,
             "clip_adjustable": True, "schedule": "step", "param_groups": {"last": 0.1}}
ADAM = {"optimizer": "adam", "weight_decay": 0.0, "clip_theta": None, "schedule": "cosine", "lr_min_ratio": 0.01}
JOBS = {"proposed": Job("proposed", "multi", SCALE), "decnn": Job("decnn", None, SCALE),
        "fscwn": Job("fscwn", None, SCALE)}
# de-CNN and FSCWN: the same arms (their recipe before the study was EDSR's Adam 1e-4).
RESIDUAL_ARMS: dict[str, tuple[dict[str, Any], int | None]] = {
    "adam1e-4-cos": ({"lr": 1e-4}, None),
    "adam2e-4-cos": ({"lr": 2e-4}, None),
    "adam5e-4-cos": ({"lr": 5e-4}, None),
    "adam2e-4-cos-p48": ({"lr": 2e-4}, 48),
    "adam1e-3-cos": ({"lr": 1e-3}, None),
}
# network -> arm -> (train overrides of the profile's experiment recipe, LR patch side or None)
ARMS: dict[str, dict[str, tuple[dict[str, Any], int | None]]] = {
    "proposed": {
        "paper-sgd": (PAPER_SGD, None),
        "paper-sgd-wd-conv": ({**PAPER_SGD, "weight_decay_params": "conv_weights"}, None),
        "adam5e-5-cos": ({**ADAM, "lr": 5e-5, "param_groups": {}}, None),
        "adam1e-4-cos": ({**ADAM, "lr": 1e-4, "param_groups": {}}, None),
        "adam2e-4-cos": ({**ADAM, "lr": 2e-4, "param_groups": {}}, None),
        "adam2e-4-cos-p48": ({**ADAM, "lr": 2e-4, "param_groups": {}}, 48),
        "adam5e-4-cos": ({**ADAM, "lr": 5e-4, "param_groups": {}}, None),
    },
    "decnn": RESIDUAL_ARMS,
    "fscwn": RESIDUAL_ARMS,
}


def batch_for(lr_size: int) -> int:
    """Patches per batch with the pixels of BASE_BATCH patches of BASE_LR_SIZE (equal compute per step)."""
    return max(1, round(BASE_BATCH * BASE_LR_SIZE ** 2 / lr_size ** 2))


def patch_file(out: Path, store: Path, split: Path, config: dict[str, Any], lr_size: int) -> Path:
    """The x2 patches with LR side ``lr_size`` (stride in the profile's proportion), made once; the
    validation slices do not depend on the patch size (same seed, same candidates)."""
    path = out / f"patches_x{SCALE}_lr{lr_size}.npz"
    if not path.exists():
        base = config["patches"][f"x{SCALE}"]
        stride = max(1, round(lr_size * base["lr_stride"] / base["lr_size"]))
        arrays = make_patches(store, read_split(split), SCALE, lr_size, stride, config["train"]["val_slices"],
                              config["split"]["seed"])
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def arm_config(base: dict[str, Any], network: str, arm: str, steps: int, every: int) -> dict[str, Any]:
    """The whole profile for one arm: the network's experiment recipe with the arm's overrides, run
    for ``steps`` steps as ``steps // every`` short epochs (a validation at each epoch's end)."""
    overrides, lr_size = ARMS[network][arm]
    config = copy.deepcopy(base)
    job = JOBS[network]
    exp = next(e for e in config["experiments"] if e["model"] == job.model and e.get("strategy") == job.strategy)
    epochs = steps // every
    exp["train"] = {**exp.get("train", {}), **overrides, "epochs": epochs, "steps_per_epoch": every,
                    "batch_size": batch_for(lr_size or BASE_LR_SIZE), "lr_step_epochs": max(1, epochs // 5),
                    "checkpoint_every_s": 10 ** 9, "seeds": [0], "recipe": f"study arm {arm}"}
    return config


def run_arm(network: str, arm: str, base: dict[str, Any], args: argparse.Namespace) -> pd.DataFrame:
    """Train one arm; write its curve (``ARM.csv``) and final per-slice PSNRs (``ARM.slices.csv``)."""
    folder = args.out / network
    folder.mkdir(parents=True, exist_ok=True)
    config = arm_config(base, network, arm, args.steps, args.every)
    patches = patch_file(args.out, args.store, args.split, config, ARMS[network][arm][1] or BASE_LR_SIZE)
    weights = folder / f"{arm}.safetensors"
    t0 = time.perf_counter()
    try:
        history = train(JOBS[network], patches, weights, config, seed=0)
    except NonFiniteLossError as exc:  # a diverged arm is a result: recorded, its curve ends there
        print(f"{network} {arm}: {exc}", flush=True)
        history = []
    wall = time.perf_counter() - t0
    frame = pd.DataFrame(history)
    if weights.exists():
        meta = json.loads(weights.with_suffix(".json").read_text())
        model, _ = load_model(weights)
        data = np.load(patches)
        pairs = [(data[f"val_lr_{i}"], data[f"val_hr_{i}"]) for i in range(config["train"]["val_slices"])]
        slices = validation_psnrs(model, pairs, border_pixels(config, SCALE), torch.device("cpu"))
        pd.DataFrame({"slice": range(len(slices)), "psnr": slices}).to_csv(folder / f"{arm}.slices.csv", index=False)
        start = pd.DataFrame([{"epoch": 0, "val_psnr": meta["initial_val_psnr"]}])
        frame = pd.concat([start, frame], ignore_index=True)
        frame["bicubic_val_psnr"] = meta["bicubic_val_psnr"]
    frame.insert(0, "step", frame["epoch"] * args.every if len(frame) else [])
    frame.insert(0, "arm", arm)
    frame.insert(0, "network", network)
    frame["wall_s"] = wall
    frame["batch_size"] = batch_for(ARMS[network][arm][1] or BASE_LR_SIZE)
    frame["lr_size"] = ARMS[network][arm][1] or BASE_LR_SIZE
    frame.to_csv(folder / f"{arm}.csv", index=False)
    return frame


def paired(folder: Path, baseline: str, arm: str) -> dict[str, float]:
    """Mean per-slice PSNR difference (arm - baseline) with its 95 % t-interval and the slices won."""
    a = pd.read_csv(folder / f"{arm}.slices.csv")["psnr"].to_numpy()
    b = pd.read_csv(folder / f"{baseline}.slices.csv")["psnr"].to_numpy()
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"final_val_psnr": float(a.mean()), "diff_vs_current": float(d.mean()),
            "ci_low": float(d.mean() - half), "ci_high": float(d.mean() + half), "slices_won": int((d > 0).sum()),
            "slices": len(d)}


def summary(out: Path) -> pd.DataFrame:
    """One row per finished arm: final and best validation PSNR, the paired comparison with the
    network's current recipe, wall time."""
    rows = []
    for network, arms in ARMS.items():
        folder = out / network
        baseline = next(iter(arms))
        for arm in arms:
            if not (folder / f"{arm}.csv").exists():
                continue
            curve = pd.read_csv(folder / f"{arm}.csv")
            row = {"network": network, "arm": arm, "lr_size": int(curve["lr_size"].iloc[0]),
                   "batch_size": int(curve["batch_size"].iloc[0]), "steps": int(curve["step"].max()) if len(curve) else 0,
                   "best_val_psnr": float(curve["val_psnr"].max()) if len(curve) else float("nan"),
                   "bicubic_val_psnr": float(curve["bicubic_val_psnr"].iloc[0]) if "bicubic_val_psnr" in curve else float("nan"),
                   "wall_s": float(curve["wall_s"].iloc[0])}
            if (folder / f"{arm}.slices.csv").exists() and (folder / f"{baseline}.slices.csv").exists():
                row.update(paired(folder, baseline, arm))
            rows.append(row)
    return pd.DataFrame(rows)


def plot(out: Path, figure: Path) -> pd.DataFrame:
    """The curves, one panel per network, as ``figure`` (PNG) and its data beside it (CSV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = [pd.read_csv(out / n / f"{a}.csv") for n, arms in ARMS.items() for a in arms if (out / n / f"{a}.csv").exists()]
    table = pd.concat(frames, ignore_index=True)
    networks = [n for n in ARMS if n in set(table["network"])]
    # One y axis for all panels: the networks' levels are compared too (at equal steps, not equal FLOPs).
    fig, axes = plt.subplots(1, len(networks), figsize=(5.2 * len(networks), 4.4), squeeze=False, sharey=True)
    for ax, network in zip(axes[0], networks):
        rows = table[table["network"] == network]
        for arm, curve in rows.groupby("arm", sort=False):
            ax.plot(curve["step"], curve["val_psnr"], marker="o", ms=3, label=arm)
        bicubic = rows["bicubic_val_psnr"].dropna().iloc[0]
        ax.axhline(bicubic, color="grey", lw=1, ls=":", label=f"bicubic {bicubic:.2f} dB")
        ax.set_ylim(bicubic - 0.5, table["val_psnr"].max() + 0.3)
        ax.set_xlabel(f"optimiser steps ({BASE_BATCH} x {BASE_LR_SIZE}² LR pixels each)")
        ax.set_ylabel("validation PSNR (dB), x2")
        ax.set_title(f"{network} (x2), seed 0")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=100)
    table.to_csv(figure.with_suffix(".csv"), index=False, float_format="%.4f")
    summary(out).to_csv(figure.with_name(figure.stem + "_summary.csv"), index=False, float_format="%.4f")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    parser.add_argument("--store", type=Path, help="the profile's prepared store (mrsr ingest)")
    parser.add_argument("--split", type=Path, help="the profile's split.csv (mrsr split)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the arms' patches, weights and curves")
    parser.add_argument("--models", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--arms", nargs="+", help="only these arms (names as in ARMS)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per arm (300: 3 epochs of the sample's x2 patches)")
    parser.add_argument("--every", type=int, default=60, help="steps between validations")
    parser.add_argument("--val-slices", type=int, default=16, help="held-out training-series slices")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "heavy_recipes.png")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.plot_only:
        base = load_config(args.config)
        base["train"].update(threads=args.threads, val_slices=args.val_slices)
        for network in args.models:
            for arm in ARMS[network]:
                if args.arms and arm not in args.arms:
                    continue
                if (args.out / network / f"{arm}.csv").exists():
                    print(f"{network} {arm}: done already", flush=True)
                    continue
                frame = run_arm(network, arm, base, args)
                print(f"{network} {arm}: {frame['val_psnr'].iloc[-1]:.2f} dB after {args.steps} steps, "
                      f"{frame['wall_s'].iloc[0]:.0f} s", flush=True)
    plot(args.out, args.figure)
    print(summary(args.out).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
