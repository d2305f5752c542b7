"""``mrsr report``: one self-contained HTML file (Jinja2; images embedded; works offline).

It shows Table 1 (upsampling strategies), Table 2 (PSNR/SSIM per method and scale) and Table 3 (CPU
time per slice, from ``mrsr timing``, with the bf16 path) beside the paper's figures with the
differences and the gains over bicubic, a Figure-3-style visual
comparison with error maps, training curves, per-image metric distributions, the dataset and split,
rejected files, the metric recipe, hardware, versions, git revision and configuration.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.stats  # noqa: E402
import yaml  # noqa: E402

from mrsr import paper  # noqa: E402
from mrsr.config import Job, load_config, training_jobs  # noqa: E402
from mrsr.errors import InputFileError, output_file  # noqa: E402
from mrsr.io import write_text  # noqa: E402
from mrsr.metrics import RECIPE  # noqa: E402
from mrsr.table3 import bf16_rows, size_labels, table3_rows  # noqa: E402
from mrsr.weights import git_revision  # noqa: E402

LIBRARIES = ["torch", "numpy", "scikit-image", "pandas", "pydicom", "snakemake", "dvc", "jinja2", "safetensors", "nibabel"]


def png_data_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the paired difference a - b with a 95 % percentile bootstrap interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def paired_comparison(a: pd.DataFrame, b: pd.DataFrame) -> dict[str, Any]:
    """PSNR of ``a`` against ``b`` on the slices both have: bootstrap interval and Wilcoxon test.

    Args:
        a, b: per-image frames with ``slice_id`` and ``psnr``.

    Returns:
        ``ci`` (mean difference a - b, 95 % bootstrap low, high), ``p`` (two-sided Wilcoxon
        signed-rank p-value; None when every difference is zero or fewer than 6 slices pair up,
        below which the test cannot reach 5 %) and ``n`` (paired slices).
    """
    merged = a.merge(b, on="slice_id", suffixes=("", "_b"))
    diff = (merged["psnr"] - merged["psnr_b"]).to_numpy(float)
    p = None
    if len(diff) >= 6 and np.any(diff != 0):
        p = float(scipy.stats.wilcoxon(diff).pvalue)
    return {"ci": bootstrap_diff(merged["psnr"], merged["psnr_b"]), "p": p, "n": len(diff)}


def best_baseline(at: pd.DataFrame) -> str | None:
    """The competing method with the highest mean PSNR at one scale (bicubic included, ours not)."""
    rivals = at[[m != "proposed" for m in at.index]]
    return str(rivals["psnr"].idxmax()) if len(rivals) else None


def table2_rows(summary: pd.DataFrame, per_image: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """One row per (method, scale): ours, the paper's, differences, gains over bicubic and the best baseline.

    Each method's gain over bicubic has a paired bootstrap interval (``ci``); each method other than
    the best baseline of its scale is compared with it slice by slice (``vs_best``: bootstrap interval
    and Wilcoxon signed-rank p-value).
    """
    rows = []
    ours = summary[(summary["method"] != "proposed") | (summary["strategy"] == "multi")]
    for scale in sorted(ours["scale"].unique()):
        at = ours[ours["scale"] == scale].set_index("method")
        bic = at.loc["bicubic"] if "bicubic" in at.index else None
        best = best_baseline(at)
        best_images = per_image.get(Job(best, None, int(scale)).name) if best else None
        for method in paper.METHOD_ORDER:
            if method not in at.index:
                continue
            r = at.loc[method]
            pub = paper.TABLE2.get(method, {}).get(int(scale))
            pub_bic = paper.TABLE2["bicubic"].get(int(scale))
            row = {"method": paper.DISPLAY_NAMES.get(method, method), "scale": int(scale), "psnr": r["psnr"],
                   "ssim": r["ssim"], "psnr_std": r["psnr_std"], "psnr_fg": r["psnr_fg"], "n": int(r["n_images"]),
                   "paper_psnr": pub[0] if pub else None, "paper_ssim": pub[1] if pub else None}
            row["diff_psnr"] = r["psnr"] - pub[0] if pub else None
            own = per_image.get(Job(method, "multi" if method == "proposed" else None, int(scale)).name)
            row["best_baseline"] = paper.DISPLAY_NAMES.get(best, best) if best else None
            row["is_best_baseline"] = method == best
            if method != best and own is not None and best_images is not None:
                row["vs_best"] = paired_comparison(own, best_images)
            if bic is not None and method != "bicubic":
                row["gain"] = r["psnr"] - bic["psnr"]
                row["paper_gain"] = pub[0] - pub_bic[0] if pub and pub_bic else None
                bic_images = per_image.get(Job("bicubic", None, int(scale)).name)
                if own is not None and bic_images is not None:
                    row["ci"] = paired_comparison(own, bic_images)["ci"]
            rows.append(row)
    return rows


def table1_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    part = summary[(summary["method"] == "proposed") & (summary["scale"] == 2)].set_index("strategy")
    rows = []
    for strategy, name in paper.STRATEGY_NAMES.items():
        if strategy in part.index:
            r = part.loc[strategy]
            pub = paper.TABLE1[strategy]
            rows.append({"strategy": name, "psnr": r["psnr"], "ssim": r["ssim"], "paper_psnr": pub[0],
                         "paper_ssim": pub[1], "diff_psnr": r["psnr"] - pub[0]})
    return rows


def figure3(examples: dict[str, dict[str, np.ndarray]]) -> str | None:
    """The same slice and zoomed region for the ground truth and every method, with error maps."""
    if not examples:
        return None
    names = list(examples)
    hr = examples[names[0]]["hr"]
    h, w = hr.shape
    zoom = (slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3))
    panels = [("Ground truth", hr)] + [(n, examples[n]["sr"]) for n in names]
    fig, axes = plt.subplots(3, len(panels), figsize=(2.4 * len(panels), 7.4))
    axes = np.atleast_2d(axes)
    for col, (title, img) in enumerate(panels):
        axes[0, col].imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[0, col].add_patch(plt.Rectangle((zoom[1].start, zoom[0].start), w // 3, h // 3, fill=False, ec="yellow", lw=1))
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(np.clip(img[zoom], 0, 1), cmap="gray", vmin=0, vmax=1)
        err = np.abs(np.clip(img, 0, 1) - hr)[zoom]
        axes[2, col].imshow(err, cmap="inferno", vmin=0, vmax=0.1)
        for r in range(3):
            axes[r, col].axis("off")
    axes[2, 0].set_title("|error| (0-0.1)", fontsize=7)
    fig.tight_layout()
    return png_data_uri(fig)


def training_curves(histories: dict[str, pd.DataFrame]) -> str | None:
    if not histories:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    # tab20: 18 jobs need more distinct colours than the default cycle's 10.
    colours = plt.get_cmap("tab20").colors
    for i, (name, hist) in enumerate(histories.items()):
        style = {"marker": ".", "label": name, "color": colours[i % len(colours)]}
        ax1.plot(hist["epoch"], hist["loss"], **style)
        ax2.plot(hist["epoch"], hist["val_psnr"], **style)
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.set(xlabel="epoch", ylabel="validation PSNR (dB)")
    # Beside the plots, not over the curves.
    ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if len(histories) <= 12 else 2)
    fig.tight_layout()
    return png_data_uri(fig)


def distributions(per_image: dict[str, pd.DataFrame]) -> str | None:
    if not per_image:
        return None
    names = sorted(per_image)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(names)), 3.8))
    ax1.boxplot([per_image[n]["psnr"] for n in names], showmeans=True)
    ax2.boxplot([per_image[n]["ssim"] for n in names], showmeans=True)
    for ax, label in ((ax1, "PSNR (dB)"), (ax2, "SSIM")):
        ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7, ha="right")
        ax.set_ylabel(label)
    fig.tight_layout()
    return png_data_uri(fig)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def hardware() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "machine": platform.machine(), "system": platform.platform()}


def render(config: dict[str, Any], root: Path = Path(".")) -> str:
    jobs = training_jobs(config)
    evaluations = [f"bicubic_x{s}" for s in config["scales"]] + [j.name for j in jobs]
    metrics_dir = root / "results/metrics"
    summary = pd.read_csv(metrics_dir / "summary.csv", keep_default_na=False, dtype={"strategy": str})
    per_image = {n: pd.read_csv(metrics_dir / "per_image" / f"{n}.csv") for n in evaluations
                 if (metrics_dir / "per_image" / f"{n}.csv").exists()}
    histories = {j.name: pd.read_csv(root / "models" / f"{j.name}.history.csv") for j in jobs
                 if (root / "models" / f"{j.name}.history.csv").exists()}
    figure_examples = {}
    figure_scale = min(config["scales"])  # one scale: every panel shows the same slice and region
    for n in evaluations:
        if not n.endswith(f"_x{figure_scale}"):
            continue
        path = root / "results/examples" / f"{n}.npz"
        job = Job.from_name(n)
        if path.exists() and (job.model != "proposed" or job.strategy == "multi"):
            with np.load(path) as data:
                if "sr" in data.files:
                    figure_examples[n] = {k: data[k] for k in ("hr", "sr")}
    split = json.loads((root / "data/prepared/split.json").read_text())
    ingest = json.loads((root / "data/prepared/store/ingest.json").read_text())
    rejected = pd.read_csv(root / "data/prepared/store/rejected.csv")
    timing_csv, machine_json = root / "results/timing/table3.csv", root / "results/timing/machine.json"
    # No timing results (a report rendered before the timing rule ran): Table 3 says so.
    timing = (pd.read_csv(timing_csv, keep_default_na=False, na_values=[""]) if timing_csv.exists()
              else pd.DataFrame(columns=["name", "method", "strategy", "scale", "size", "hr_shape", "dtype", "timed_as"]))
    machine = json.loads(machine_json.read_text()) if machine_json.exists() else None
    env = jinja2.Environment(loader=jinja2.PackageLoader("mrsr", "templates"), autoescape=jinja2.select_autoescape(),
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        profile=config["profile"], data_source=config["data"]["source"], config_yaml=yaml.safe_dump(config, sort_keys=False),
        table1=table1_rows(summary), table2=table2_rows(summary, per_image), summary_ours=paper.SUMMARY_OURS,
        figure3=figure3(figure_examples), curves=training_curves(histories), distributions=distributions(per_image),
        split=split, ingest=ingest, rejected=rejected.to_dict("records"), recipe=RECIPE.strip(),
        versions=versions(), hardware=hardware(), revision=git_revision(), jobs=[j.name for j in jobs],
        model_init=config.get("model", {}).get("proposed", {}), train=config["train"],
        table3=table3_rows(timing), table3_sizes=size_labels(timing), bf16=bf16_rows(timing),
        timing_machine=machine, paper_table3_cpu=paper.TABLE3_CPU,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="workflow config the results were made with")
    parser.add_argument("--out", required=True, type=output_file, help="HTML file to write")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        html = render(config)
    except FileNotFoundError as exc:  # render only reads: a missing file is a workflow step not yet run
        raise InputFileError(f"{exc.filename}: no such file; the report reads the workflow's results "
                             "(run the workflow first, from the repository folder)") from exc
    write_text(args.out, html)
    print(f"wrote {args.out}")
    return 0
