"""The report's tables and their statistics: Table 1 (upsampling strategies, with bicubic, each
strategy's initialisation and budget), Table 2 (PSNR/SSIM per method and scale, means over training
seeds with their spread, gains over bicubic with paired bootstrap intervals, Wilcoxon tests against
the best baseline), the marker of a row at or below bicubic (:func:`below_bicubic`) and the section
"Series vs patient split" (:func:`leakage_comparison`). Pure functions of the workflow's CSVs and the
config; :mod:`mrsr.report` renders them.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from mrsr import paper
from mrsr.config import Job, job_train_settings, leakage_job, model_options
from mrsr.evaluate import summarize
from mrsr.models.proposed import MultiResolutionSR
from mrsr.modelspec import MODEL_SPECS, display_name, report_order


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
    ours = summary[[strategy == (MODEL_SPECS[m].table_strategy or "") if m in MODEL_SPECS else True
                    for m, strategy in zip(summary["method"], summary["strategy"].fillna(""))]]
    for scale in sorted(ours["scale"].unique()):
        at = ours[ours["scale"] == scale].set_index("method")
        bic = at.loc["bicubic"] if "bicubic" in at.index else None
        best = best_baseline(at)
        best_images = per_image.get(Job(best, None, int(scale)).name) if best else None
        for method in report_order():
            if method not in at.index:
                continue
            r = at.loc[method]
            pub = paper.TABLE2.get(MODEL_SPECS[method].paper, {}).get(int(scale))
            pub_bic = paper.TABLE2["bicubic"].get(int(scale))
            job = Job(method, MODEL_SPECS[method].table_strategy, int(scale))
            row = {"method": display_name(method), "scale": int(scale), "psnr": r["psnr"],
                   "ssim": r["ssim"], "psnr_std": r["psnr_std"], "psnr_fg": r["psnr_fg"], "n": int(r["n_images"]),
                   "paper_psnr": pub[0] if pub else None, "paper_ssim": pub[1] if pub else None, **seed_spread(r, method)}
            row["diff_psnr"] = r["psnr"] - pub[0] if pub else None
            own = per_image.get(job.name)
            row["best_baseline"] = display_name(best) if best else None
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
        rows.append({"strategy": display_name("bicubic"), "psnr": r["psnr"], "ssim": r["ssim"],
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
    name = display_name(job.model) if job.strategy == MODEL_SPECS[job.model].table_strategy else job.name
    return {"name": name, "job": job.name, "scale": job.scale, "rows": rows, "difference": difference, "se": se,
            "beyond_seeds": beyond}


def _stem(path: Path) -> str:
    """``proposed_multi_x2`` for ``.../proposed_multi_x2.csv`` or ``.../proposed_multi_x2.history.csv``."""
    return Path(path).name.split(".")[0]
