"""The report's Table 3: our CPU times (``mrsr timing``'s CSV) beside the paper's, and the bf16 path."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mrsr import paper
from mrsr.modelspec import MODEL_SPECS, display_name, report_order


def size_labels(frame: pd.DataFrame) -> list[dict[str, str]]:
    """The timed sizes in order, each with a caption (``native`` names its shape)."""
    out = []
    for label in dict.fromkeys(frame["size"].astype(str)):
        shapes = sorted(set(frame.loc[frame["size"].astype(str) == label, "hr_shape"]))
        caption = f"native ({', '.join(shapes)})" if label == "native" else f"{label}x{label}"
        out.append({"label": label, "caption": caption})
    return out


def table3_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per (scale, method) of the fp32 timings: seconds per slice at every size, the paper's.

    "Ours" is the multi-resolution network; the other strategies of Table 1 are in the CSV.
    """
    fp32 = frame[frame["dtype"] == "fp32"].copy()
    fp32["size"] = fp32["size"].astype(str)
    fp32["strategy"] = fp32["strategy"].fillna("").astype(str)
    rows = []
    for scale in sorted(fp32["scale"].unique()):
        for method in report_order():
            part = fp32[(fp32["scale"] == scale) & (fp32["method"] == method)]
            if MODEL_SPECS[method].table_strategy:
                part = part[part["strategy"] == MODEL_SPECS[method].table_strategy]
            if part.empty:
                continue
            by_size = {r.size: r for r in part.itertuples()}
            first = next(iter(by_size.values()))
            times = {label: {"median": r.ms_per_slice / 1e3, "q25": r.ms_q25 / 1e3, "q75": r.ms_q75 / 1e3,
                             "min": r.ms_min / 1e3, "max": r.ms_max / 1e3, "timed_as": r.timed_as}
                     for label, r in by_size.items()}
            pub = paper.TABLE3.get(MODEL_SPECS[method].paper, {}).get(int(scale))
            rows.append({"scale": int(scale), "method": display_name(method), "times": times,
                         "gflop": first.gflop_per_slice, "gflops": first.gflops, "ratio": first.roofline_ratio,
                         "load": getattr(first, "other_load_cores", None),
                         "paper_s": pub, "vs_paper": times[first.size]["median"] / pub if pub else None})
    return rows


def bf16_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per bf16 timing: its speed against fp32 and the PSNR difference.

    A size whose slices had the shape of another size was not timed again (``timed_as``); it would
    only repeat that row, so it is left out.
    """
    rows = []
    key = ["name", "size"]
    fp32 = frame[frame["dtype"] == "fp32"].set_index(key)
    bf16 = frame[(frame["dtype"] == "bf16") & (frame["size"].astype(str) == frame["timed_as"].astype(str))]
    for r in bf16.itertuples():
        ref = fp32.loc[(r.name, r.size)]
        rows.append({"name": r.name, "size": str(r.size), "fp32_ms": ref["ms_per_slice"], "bf16_ms": r.ms_per_slice,
                     "speedup": ref["ms_per_slice"] / r.ms_per_slice, "runs": r.runs, "psnr_fp32": r.psnr_fp32,
                     "psnr_bf16": r.psnr_bf16, "psnr_diff": r.psnr_diff_db, "agreement": r.psnr_bf16_vs_fp32})
    return rows
