"""``mrsr report``: one self-contained HTML file (Jinja2; images embedded; works offline).

It shows Table 1 (upsampling strategies, with bicubic and each strategy's initialisation and budget),
Table 2 (PSNR/SSIM per method and scale; for a trained network the mean over its training seeds with
the spread across them) and Table 3 (CPU time per slice, from ``mrsr timing``, with the bf16 path)
beside the paper's figures with the differences and the gains over bicubic; a row at or below
bicubic carries a marker (:func:`below_bicubic`). The section "Series vs patient split"
(:func:`leakage_comparison`) shows what the paper's split by series is worth against a split by
patient of the same data. Then a Figure-3-style visual comparison
(Table 2's methods in its order, PSNR/SSIM per panel, error maps on one colour scale), training
curves, per-image metric distributions, the dataset and split, rejected files, the metric recipe,
hardware, versions, git revision and configuration.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import io
import json
import math
from dataclasses import dataclass, field
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
from mrsr.config import (Job, border_pixels, job_seeds, job_train_settings, leakage_job, load_config,  # noqa: E402
                         model_options, training_jobs)
from mrsr.errors import existing_file, output_file  # noqa: E402
from mrsr.evaluate import summarize  # noqa: E402
from mrsr.io import write_bytes, write_text  # noqa: E402
from mrsr.recipes import COLUMNS as RECIPE_COLUMNS  # noqa: E402
from mrsr.recipes import recipe_rows  # noqa: E402
from mrsr.metrics import RECIPE, crop_border, psnr, ssim  # noqa: E402
from mrsr.models.proposed import MultiResolutionSR  # noqa: E402
from mrsr.provenance import git_revision, hardware, versions  # noqa: E402
from mrsr.table3 import bf16_rows, size_labels, table3_rows  # noqa: E402


def png_bytes_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_data_uri(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png_bytes_uri(buf.getvalue())


def empty_png(message: str) -> bytes:
    """A small PNG that says why there is no figure (the workflow's figure outputs always exist)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


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


def budget(settings: dict[str, Any]) -> str:
    """A job's training budget as ``epochs x steps x batch`` (``full pass``: steps_per_epoch null)."""
    steps = settings.get("steps_per_epoch")
    return f"{settings['epochs']} epochs x {f'{steps} steps' if steps else 'full pass'} x {settings['batch_size']}"


def schedule(settings: dict[str, Any]) -> str:
    """Budget, optimiser and learning rate: what Table 1 compares between strategies."""
    return f"{budget(settings)}, {settings['optimizer']} lr {settings['lr']:g}"


def below_bicubic(psnr_db: float, bicubic_db: float | None, profile: str,
                  settings: dict[str, Any] | None) -> dict[str, str] | None:
    """The row's marker when a method's mean PSNR is at or below bicubic's at its scale, else None.

    The one rule for Tables 1 and 2. Outside the paper profile the marker gives the job's budget
    (``settings``: its ``train`` section), the likely reason; in the paper profile it says only
    that the method does not beat bicubic, and excuses nothing.

    Returns:
        ``tag`` (``below bicubic`` or ``at bicubic``), ``gap`` (``-0.42 dB``) and ``detail`` (the
        budget, or "" in the paper profile).
    """
    if bicubic_db is None or psnr_db > bicubic_db:
        return None
    gap = psnr_db - bicubic_db
    detail = ""
    if profile != "paper" and settings is not None:
        detail = f"{profile} profile, trained {budget(settings)} only"
    return {"tag": f"{'below' if gap < 0 else 'at'} bicubic", "gap": f"{gap:+.2f} dB", "detail": detail}


def _number(value: Any) -> float | None:
    """A summary cell as a float, or None when it is empty or NaN (one seed has no spread)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def seed_spread(r: pd.Series, method: str) -> dict[str, Any]:
    """A summary row's spread across training seeds: ``n_seeds`` (None for bicubic, which has no
    seed; 1 for a summary without the column), ``psnr_seed_sd`` and ``ssim_seed_sd`` (None below
    two seeds). ``method``: the row's method (a row indexed by method does not hold it)."""
    if method == "bicubic":
        return {"n_seeds": None, "psnr_seed_sd": None, "ssim_seed_sd": None}
    n = int(_number(r.get("n_seeds")) or 1)
    return {"n_seeds": n, "psnr_seed_sd": _number(r.get("psnr_seed_std")) if n > 1 else None,
            "ssim_seed_sd": _number(r.get("ssim_seed_std")) if n > 1 else None}


def seeds_note(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What Tables 1-2 say about training seeds: ``counts`` (the seed counts of their networks) and
    ``single`` (every network was trained with one seed: the caption says no spread is shown)."""
    counts = sorted({r["n_seeds"] for r in rows if r.get("n_seeds")})
    return {"counts": counts, "single": counts in ([], [1])}


def read_summary(path: Path) -> pd.DataFrame:
    """summary.csv of ``mrsr summarize``, its empty cells (no spread with one seed) as NaN."""
    summary = pd.read_csv(path, keep_default_na=False, dtype={"strategy": str})
    for column in ("psnr_seed_std", "ssim_seed_std", "n_seeds"):
        if column in summary:
            summary[column] = pd.to_numeric(summary[column], errors="coerce")
    return summary


def seed_mean_images(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """Per evaluation (file stem, e.g. ``proposed_multi_x2``), its per-slice metrics averaged over the
    seeds' files (``per_image/seed<k>/``): Tables 1-2's gains are means over seeds, so their paired
    intervals and tests compare per-slice means over seeds. One file: its rows as they are."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for path in paths:
        parts.setdefault(_stem(path), []).append(pd.read_csv(path))
    out = {}
    for name, frames in parts.items():
        if len(frames) == 1:
            out[name] = frames[0]
            continue
        columns = [c for c in ("psnr", "ssim", "psnr_fg") if c in frames[0]]
        out[name] = pd.concat(frames).groupby("slice_id", sort=False, as_index=False)[columns].mean()
    return out


def _bicubic_psnr(summary: pd.DataFrame, scale: int) -> float | None:
    rows = summary[(summary["method"] == "bicubic") & (summary["scale"] == scale)]
    return float(rows["psnr"].iloc[0]) if len(rows) else None


def table2_rows(summary: pd.DataFrame, per_image: dict[str, pd.DataFrame], config: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (method, scale): ours, the paper's, differences, gains over bicubic and the best baseline.

    Each method's gain over bicubic has a paired bootstrap interval (``ci``); each method other than
    the best baseline of its scale is compared with it slice by slice (``vs_best``: bootstrap interval
    and Wilcoxon signed-rank p-value). ``note``: :func:`below_bicubic`'s marker with the job's budget
    from ``config``.
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
            job = Job(method, "multi" if method == "proposed" else None, int(scale))
            row = {"method": paper.DISPLAY_NAMES.get(method, method), "scale": int(scale), "psnr": r["psnr"],
                   "ssim": r["ssim"], "psnr_std": r["psnr_std"], "psnr_fg": r["psnr_fg"], "n": int(r["n_images"]),
                   "paper_psnr": pub[0] if pub else None, "paper_ssim": pub[1] if pub else None, **seed_spread(r, method)}
            row["diff_psnr"] = r["psnr"] - pub[0] if pub else None
            own = per_image.get(job.name)
            row["best_baseline"] = paper.DISPLAY_NAMES.get(best, best) if best else None
            row["is_best_baseline"] = method == best
            row["note"] = None
            if method != best and own is not None and best_images is not None:
                row["vs_best"] = paired_comparison(own, best_images)
            if bic is not None and method != "bicubic":
                row["gain"] = r["psnr"] - bic["psnr"]
                row["paper_gain"] = pub[0] - pub_bic[0] if pub and pub_bic else None
                bic_images = per_image.get(Job("bicubic", None, int(scale)).name)
                if own is not None and bic_images is not None:
                    row["ci"] = paired_comparison(own, bic_images)["ci"]
                row["note"] = below_bicubic(r["psnr"], bic["psnr"], config["profile"], job_train_settings(config, job))
            rows.append(row)
    return rows


def table2_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 2's rows by scale, each group with what its rows share: slices (``n``) and best baseline.

    A row whose slice count differs from the group's most common one keeps its own (``own_n``).
    """
    groups = []
    for scale in dict.fromkeys(r["scale"] for r in rows):
        part = [dict(r) for r in rows if r["scale"] == scale]
        counts = [r["n"] for r in part]
        n = max(set(counts), key=counts.count)
        for r in part:
            r["own_n"] = r["n"] if r["n"] != n else None
        groups.append({"scale": scale, "n": n, "best_baseline": part[0]["best_baseline"], "rows": part})
    return groups


def proposed_init(config: dict[str, Any]) -> dict[str, str]:
    """The proposed net's two deconvolution initialisations in this run: ``model.proposed``'s
    ``image_deconv_init`` and ``feature_deconv_init``, or where it names none, the model's own
    default (:class:`~mrsr.models.proposed.MultiResolutionSR`'s signature, their one definition)."""
    options, signature = model_options(config, "proposed"), inspect.signature(MultiResolutionSR).parameters
    return {key: options.get(key, signature[key].default) for key in ("image_deconv_init", "feature_deconv_init")}


def strategy_init(config: dict[str, Any], strategy: str) -> str:
    """How one strategy of Table 1 starts training (:func:`proposed_init`).

    The single strategy has no LR-image deconvolution, so ``image_deconv_init`` does not reach it:
    with ``feature_deconv_init: zero`` it starts from a blank output while the other two start as
    bicubic interpolation.
    """
    init = proposed_init(config)
    image, feature = init["image_deconv_init"], init["feature_deconv_init"]
    parts = []
    if strategy != "single" and image != "he":
        parts.append(f"LR-image deconv. {image}")
    if feature != "he":
        parts.append(f"feature deconv. {feature}")
    if not parts:
        return "He (as the paper)"
    start = ""
    if feature == "zero" and strategy == "single":
        start = ": starts as a blank image"  # zero feature deconvolution, zero bias, no image path
    elif feature == "zero" and image == "bicubic":
        start = ": starts as bicubic"
    return f"He; {', '.join(parts)}{start}"


def table1_rows(summary: pd.DataFrame, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Bicubic at x2, then one row per strategy: ours, the paper's Table 1, initialisation and budget.

    The paper's Table 1 has no bicubic row; bicubic's paper figures come from its Table 2
    (``paper_table``). ``note``: :func:`below_bicubic`'s marker.
    """
    part = summary[(summary["method"] == "proposed") & (summary["scale"] == 2)].set_index("strategy")
    bic = _bicubic_psnr(summary, 2)
    rows = []
    if bic is not None:
        r = summary[(summary["method"] == "bicubic") & (summary["scale"] == 2)].iloc[0]
        pub = paper.TABLE2["bicubic"][2]
        rows.append({"strategy": paper.DISPLAY_NAMES["bicubic"], "psnr": r["psnr"], "ssim": r["ssim"],
                     "paper_psnr": pub[0], "paper_ssim": pub[1], "paper_table": 2, "diff_psnr": r["psnr"] - pub[0],
                     "init": None, "schedule": None, "note": None, **seed_spread(r, "bicubic")})
    for strategy, name in paper.STRATEGY_NAMES.items():
        if strategy in part.index:
            r = part.loc[strategy]
            pub = paper.TABLE1[strategy]
            settings = job_train_settings(config, Job("proposed", strategy, 2))
            rows.append({"strategy": name, "psnr": r["psnr"], "ssim": r["ssim"], "paper_psnr": pub[0],
                         "paper_ssim": pub[1], "paper_table": 1, "diff_psnr": r["psnr"] - pub[0],
                         "init": strategy_init(config, strategy), "schedule": schedule(settings),
                         "note": below_bicubic(r["psnr"], bic, config["profile"], settings), **seed_spread(r, "proposed")})
    return rows


def table1_differences(rows: list[dict[str, Any]]) -> dict[str, bool]:
    """Whether Table 1's strategies differ in initialisation (``init``) or budget (``schedule``)."""
    strategies = [r for r in rows if r["init"] is not None]
    return {key: len({r[key] for r in strategies}) > 1 for key in ("init", "schedule")}


def leakage_comparison(config: dict[str, Any], summary: pd.DataFrame, per_image: dict[str, pd.DataFrame],
                       leakage_per_image: list[Path], split: dict[str, Any],
                       leakage_split: dict[str, Any] | None) -> dict[str, Any] | None:
    """The section "Series vs patient split": the ``leakage`` job on the profile's split by series and
    on a split by patient of the same data, each with bicubic on its own test set.

    Args:
        config: the profile (``leakage.job``).
        summary: summary.csv (the split by series).
        per_image: the split by series' per-slice metrics, averaged over seeds (:func:`seed_mean_images`).
        leakage_per_image: the split by patient's per-image CSVs (bicubic and every seed of the job).
        split, leakage_split: split.json of each split (counts; ``test_patients_in_train``).

    Returns:
        None when the check is off or has no results; else ``name`` (display name), ``job``, ``scale``, ``rows`` (per split:
        PSNR and SSIM means over seeds with their spread, bicubic, the gain with its 95 % paired
        bootstrap interval, test and training counts), ``difference`` (gain by series minus gain by
        patient), ``se`` (its standard error from the seeds' spread, None with one seed) and
        ``beyond_seeds`` (|difference| > 2 se; None without an se).
    """
    job = leakage_job(config)
    if job is None or not leakage_per_image:
        return None
    by_patient = summarize(leakage_per_image)
    rows = []
    for by, table, images, counts in (("series", summary, per_image, split),
                                      ("patient", by_patient, seed_mean_images(leakage_per_image), leakage_split or {})):
        at = table[table["scale"] == job.scale]
        ours = at[(at["method"] == job.model) & (at["strategy"] == (job.strategy or ""))]
        bic = at[at["method"] == "bicubic"]
        if ours.empty or bic.empty:
            return None
        r, b = ours.iloc[0], bic.iloc[0]
        row = {"by": by, "psnr": float(r["psnr"]), "ssim": float(r["ssim"]), "bicubic_psnr": float(b["psnr"]),
               "gain": float(r["psnr"] - b["psnr"]), "n_images": int(r["n_images"]), **seed_spread(r, job.model),
               "test": counts.get("test"), "train": counts.get("train"),
               "test_patients_in_train": counts.get("test_patients_in_train")}
        own, bic_images = images.get(job.name), images.get(Job("bicubic", None, job.scale).name)
        row["ci"] = paired_comparison(own, bic_images)["ci"] if own is not None and bic_images is not None else None
        rows.append(row)
    series, patient = rows
    difference = series["gain"] - patient["gain"]
    se = None
    if series["psnr_seed_sd"] is not None and patient["psnr_seed_sd"] is not None:
        se = math.sqrt(series["psnr_seed_sd"] ** 2 / series["n_seeds"] + patient["psnr_seed_sd"] ** 2 / patient["n_seeds"])
    beyond = None if se is None else abs(difference) > 2 * se
    name = paper.DISPLAY_NAMES.get(job.model, job.model) if job.strategy in (None, "multi") else job.name
    return {"name": name, "job": job.name, "scale": job.scale, "rows": rows, "difference": difference, "se": se,
            "beyond_seeds": beyond}


def figure3_panels(names: list[str]) -> list[tuple[str, str]]:
    """Figure 3's method panels: (job name, display name) in Table 2's order and with its names.

    ``names``: example job names of one scale. As in Table 2, "Ours" is the multi-resolution
    network (the other strategies are left out) and methods Table 2 does not list are left out.
    """
    by_method = {}
    for name in names:
        job = Job.from_name(name)
        if job.model != "proposed" or job.strategy == "multi":
            by_method[job.model] = name
    return [(by_method[m], paper.DISPLAY_NAMES.get(m, m)) for m in paper.METHOD_ORDER if m in by_method]


def _error_scale(errors: list[np.ndarray]) -> float:
    """One colour scale for every error map: the 99.5th percentile of all errors, two significant digits up."""
    top = max(float(np.percentile(e, 99.5)) for e in errors) if errors else 0.0
    top = max(top, 1e-3)
    step = 10.0 ** (np.floor(np.log10(top)) - 1)
    return float(np.ceil(top / step) * step)


def figure3(examples: dict[str, dict[str, np.ndarray]], border: int = 0) -> str | None:
    """The same slice and zoomed region: HR first, then every method of Table 2 in its order, with error maps.

    Each method's panel is titled with its PSNR and SSIM on this slice (the metric recipe, ``border``
    pixels cropped, as in the per-image CSVs); the error maps share one colour scale and a colour bar.
    """
    panels = figure3_panels(list(examples))
    if not panels:
        return None
    hr = np.asarray(examples[panels[0][0]]["hr"], np.float64)
    h, w = hr.shape
    zoom = (slice(h // 4, h // 4 + h // 3), slice(w // 3, w // 3 + w // 3))
    images = [np.clip(np.asarray(examples[name]["sr"], np.float64), 0, 1) for name, _ in panels]
    errors = [np.abs(img - hr)[zoom] for img in images]
    vmax = _error_scale(errors)
    # About 1.5 inches a panel: eight panels fill a 1280-pixel page at dpi 110 without shrinking the titles.
    fig, axes = plt.subplots(3, len(panels) + 1, figsize=(1.5 * (len(panels) + 1), 5.6), layout="constrained")
    axes = np.asarray(axes).reshape(3, -1)
    slice_id = examples[panels[0][0]].get("slice_id")
    columns = [("HR (reference)" + (f"\n{slice_id}" if slice_id is not None else ""), hr, None)]
    for (name, title), img in zip(panels, images):
        ref, est = crop_border(hr, border), crop_border(img, border)
        columns.append((f"{title}\n{psnr(ref, est):.2f} dB / {ssim(ref, est):.4f}", img, np.abs(img - hr)[zoom]))
    for col, (title, img, err) in enumerate(columns):
        axes[0, col].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0, col].add_patch(plt.Rectangle((zoom[1].start, zoom[0].start), w // 3, h // 3, fill=False, ec="yellow", lw=1))
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(img[zoom], cmap="gray", vmin=0, vmax=1)
        if err is not None:
            shown = axes[2, col].imshow(err, cmap="inferno", vmin=0, vmax=vmax)
        for r in range(3):
            axes[r, col].axis("off")
    axes[2, 0].text(0.5, 0.5, "|SR - HR|\nof the zoom\n(shared scale)", ha="center", va="center", fontsize=8,
                    transform=axes[2, 0].transAxes)
    bar = fig.colorbar(shown, ax=axes[2, 1:].tolist(), location="bottom", shrink=0.6, aspect=40, extend="max")
    bar.set_label("|SR - HR| (intensities 0-1); titles: PSNR / SSIM of the whole slice", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return png_data_uri(fig)


def history_figure(histories: dict[str, pd.DataFrame], column: str, ylabel: str, log: bool = False) -> bytes | None:
    """PNG of one history column (``loss`` or ``val_psnr``) per epoch for every job, or None without histories.

    Loss (about 1e-3) and PSNR (about 36 dB) get a figure each: on one axis either would be flat.
    """
    if not histories:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    # tab20: 18 jobs need more distinct colours than the default cycle's 10.
    colours = plt.get_cmap("tab20").colors
    for i, (name, hist) in enumerate(histories.items()):
        ax.plot(hist["epoch"], hist[column], marker=".", label=name, color=colours[i % len(colours)])
    ax.set(xlabel="epoch", ylabel=ylabel, yscale="log" if log else "linear")
    # Beside the plot, not over the curves.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 if len(histories) <= 12 else 2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def training_curves(histories: dict[str, pd.DataFrame]) -> dict[str, bytes | None]:
    """The two training-curve figures as PNG bytes: ``loss`` and ``val_psnr``."""
    return {"loss": history_figure(histories, "loss", "training loss", log=True),
            "val_psnr": history_figure(histories, "val_psnr", "validation PSNR (dB)")}


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


@dataclass(frozen=True)
class ReportInputs:
    """Every artefact the report reads, as the workflow's report rule declares them.

    Evaluations and jobs are named by their file stems (``proposed_multi_x2``), so the report shows
    exactly what the rule passed and never guesses a path.
    """

    summary: Path
    per_image: list[Path]
    examples: list[Path]
    histories: list[Path]
    split: Path
    ingest: Path
    rejected: Path
    timing: Path | None = None
    machine: Path | None = None
    # The leakage check (config key ``leakage``): per-image CSVs on the split by patient and its split.json.
    leakage_per_image: list[Path] = field(default_factory=list)
    leakage_split: Path | None = None
    # The weights sidecars of each job's first seed: how each method was trained (its recipe).
    sidecars: list[Path] = field(default_factory=list)


def _stem(path: Path) -> str:
    """``proposed_multi_x2`` for ``.../proposed_multi_x2.csv`` or ``.../proposed_multi_x2.history.csv``."""
    return Path(path).name.split(".")[0]


def render(config: dict[str, Any], inputs: ReportInputs, curves: dict[str, bytes | None] | None = None) -> str:
    """The report's HTML for ``config`` from ``inputs`` (``curves``: training figures already drawn)."""
    jobs = training_jobs(config)
    summary = read_summary(inputs.summary)
    per_image = seed_mean_images(inputs.per_image)  # every seed's files; a slice's metrics averaged over seeds
    histories = {_stem(p): pd.read_csv(p) for p in inputs.histories}
    figure_scale = min(config["scales"])  # one scale: every panel shows the same slice and region
    examples = {_stem(p): p for p in inputs.examples if _stem(p).endswith(f"_x{figure_scale}")}
    figure_examples = {}
    for name, _ in figure3_panels(list(examples)):  # what Table 2 shows: Ours is the multi-resolution network
        with np.load(examples[name]) as data:
            if "sr" in data.files:
                figure_examples[name] = {k: data[k] for k in ("hr", "sr")}
                if "slice_id" in data.files:
                    figure_examples[name]["slice_id"] = str(data["slice_id"])
    split = json.loads(Path(inputs.split).read_text())
    ingest = json.loads(Path(inputs.ingest).read_text())
    rejected = pd.read_csv(inputs.rejected)
    # No timing results (a report rendered before the timing rule ran): Table 3 says so.
    timing = (pd.read_csv(inputs.timing, keep_default_na=False, na_values=[""]) if inputs.timing
              else pd.DataFrame(columns=["name", "method", "strategy", "scale", "size", "hr_shape", "dtype", "timed_as"]))
    machine = json.loads(Path(inputs.machine).read_text()) if inputs.machine else None
    curves = training_curves(histories) if curves is None else curves
    table1 = table1_rows(summary, config)
    table2 = table2_rows(summary, per_image, config)
    leakage_split = json.loads(Path(inputs.leakage_split).read_text()) if inputs.leakage_split else None
    leakage = leakage_comparison(config, summary, per_image, list(inputs.leakage_per_image), split, leakage_split)
    seed_lists = {job.name: job_seeds(config, job) for job in jobs}
    recipes = recipe_rows(json.loads(Path(p).read_text()) for p in inputs.sidecars)
    env = jinja2.Environment(loader=jinja2.PackageLoader("mrsr", "templates"), autoescape=jinja2.select_autoescape(),
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        profile=config["profile"], data_source=config["data"]["source"], config_yaml=yaml.safe_dump(config, sort_keys=False),
        table1=table1, table1_differs=table1_differences(table1), table2=table2_groups(table2),
        seeds=seeds_note(table1 + table2), leakage=leakage,
        seed_lists=sorted({tuple(v) for v in seed_lists.values()}),
        summary_ours=paper.SUMMARY_OURS, figure3=figure3(figure_examples, border_pixels(config, figure_scale)),
        curves={k: png_bytes_uri(v) for k, v in curves.items() if v},
        distributions=distributions(per_image),
        split=split, ingest=ingest, rejected=rejected.to_dict("records"), recipe=RECIPE.strip(),
        versions=versions(), hardware=hardware(), revision=git_revision(), jobs=[j.name for j in jobs],
        model_init=proposed_init(config), train=config["train"],
        table3=table3_rows(timing), table3_sizes=size_labels(timing), bf16=bf16_rows(timing),
        timing_machine=machine, paper_table3_cpu=paper.TABLE3_CPU, recipes=recipes, recipe_columns=RECIPE_COLUMNS,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=existing_file, help="the run's profile file (YAML)")
    parser.add_argument("--summary", required=True, type=existing_file, help="summary.csv of mrsr summarize")
    parser.add_argument("--per-image", required=True, nargs="+", type=existing_file, help="per-image metric CSVs")
    parser.add_argument("--examples", nargs="*", default=[], type=existing_file, help="example .npz files for Figure 3")
    parser.add_argument("--histories", nargs="*", default=[], type=existing_file, help="training history CSVs")
    parser.add_argument("--split-summary", required=True, type=existing_file, help="split.json of mrsr split")
    parser.add_argument("--ingest", required=True, type=existing_file, help="ingest.json of the slice store")
    parser.add_argument("--rejected", required=True, type=existing_file, help="rejected.csv of the slice store")
    parser.add_argument("--timing", type=existing_file, help="table3.csv of mrsr timing (Table 3; optional)")
    parser.add_argument("--machine", type=existing_file, help="machine.json of mrsr timing (optional)")
    parser.add_argument("--leakage-per-image", nargs="*", default=[], type=existing_file,
                        help="per-image CSVs of the leakage check on the split by patient (bicubic and the job's seeds)")
    parser.add_argument("--leakage-split", type=existing_file, help="split.json of the leakage check's split by patient")
    parser.add_argument("--sidecars", nargs="*", default=[], type=existing_file,
                        help="weights sidecars (.json) of each job's first seed: the training-recipe table")
    parser.add_argument("--loss-plot", type=output_file, help="also write the training-loss figure here (PNG)")
    parser.add_argument("--psnr-plot", type=output_file, help="also write the validation-PSNR figure here (PNG)")
    parser.add_argument("--out", required=True, type=output_file, help="the HTML file to write")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    inputs = ReportInputs(summary=args.summary, per_image=args.per_image, examples=args.examples,
                          histories=args.histories, split=args.split_summary, ingest=args.ingest,
                          rejected=args.rejected, timing=args.timing, machine=args.machine,
                          leakage_per_image=args.leakage_per_image, leakage_split=args.leakage_split,
                          sidecars=args.sidecars)
    curves = training_curves({_stem(p): pd.read_csv(p) for p in args.histories})
    for key, target in (("loss", args.loss_plot), ("val_psnr", args.psnr_plot)):
        if target is not None:
            write_bytes(target, curves[key] or empty_png(f"no training histories: no {key} curve"))
    write_text(args.out, render(config, inputs, curves))
    print(f"wrote {args.out}")
    return 0
