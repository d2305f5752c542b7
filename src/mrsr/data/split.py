"""``mrsr split``: assign series (the paper) or patients to train and test, seeded.

The paper uses 24 training and 28 test sequences chosen at random. With exactly that many
sequences (or more: the extra ones are left unused) the counts are reproduced exactly; with fewer,
proportionally (at least one on each side). ``split.by: patient`` keeps every series of a patient
on one side: co-registered series of one patient share anatomy, so a series split leaks.

Writes split.csv: one row per series with ``series_key, patient_id, split (train|test|unused),
n_slices, norm``, where ``norm`` is the series' maximum intensity, the constant every stage divides
by to work on [0, 1] intensities; and split.json with the counts, including how many test patients
also have a series in training (``test_patients_in_train``: what a split by series lets leak).
``--by`` overrides ``split.by`` (the workflow's leakage check makes a split by patient beside the
paper's split by series, with the same seed and counts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import load_config
from mrsr.data.store import read_index
from mrsr.errors import existing_dir, existing_file, output_file
from mrsr.io import write_csv, write_json


def split_counts(n_units: int, n_train: int, n_test: int) -> tuple[int, int]:
    """(train, test) unit counts: the requested ones when there are enough, else proportional."""
    if n_units < 2:
        raise ValueError(f"need at least 2 series/patients to split, found {n_units}")
    if n_units >= n_train + n_test:
        return n_train, n_test
    train = int(round(n_units * n_train / (n_train + n_test)))
    train = min(max(train, 1), n_units - 1)
    return train, n_units - train


def make_split(index: pd.DataFrame, by: str, seed: int, n_train: int, n_test: int) -> pd.DataFrame:
    """Series table with a ``split`` column; reproducible for a given index, unit and seed."""
    series = (
        index.groupby("series_key", sort=True)
        .agg(patient_id=("patient_id", "first"), series_uid=("series_uid", "first"),
             series_description=("series_description", "first"), n_slices=("slice_id", "size"), norm=("max", "max"))
        .reset_index()
    )
    unit_col = "series_key" if by == "series" else "patient_id"
    units = np.array(sorted(series[unit_col].unique()))
    train_n, test_n = split_counts(len(units), n_train, n_test)
    order = np.random.default_rng(seed).permutation(len(units))
    train_units = set(units[order[:train_n]])
    test_units = set(units[order[train_n : train_n + test_n]])
    series["split"] = [
        "train" if u in train_units else "test" if u in test_units else "unused" for u in series[unit_col]
    ]
    # `norm <= 0` alone would let NaN through (every comparison with NaN is False)
    bad = ~np.isfinite(series["norm"]) | (series["norm"] <= 0)
    if bad.any():
        raise ValueError(f"series whose maximum intensity (norm) is not a positive finite number: "
                         f"{list(series.loc[bad, 'series_key'])}; ingest again (it drops NaN/Inf slices)")
    return series


def summarize(series: pd.DataFrame, by: str, seed: int) -> dict:
    counts = {}
    for name in ("train", "test", "unused"):
        part = series[series["split"] == name]
        counts[name] = {"series": int(len(part)), "patients": int(part["patient_id"].nunique()),
                        "slices": int(part["n_slices"].sum())}
    train_patients = set(series.loc[series["split"] == "train", "patient_id"])
    test_patients = set(series.loc[series["split"] == "test", "patient_id"])
    return {"by": by, "seed": seed, **counts, "test_patients_in_train": len(test_patients & train_patients)}


def add_store_and_split_arguments(parser: argparse.ArgumentParser) -> None:
    """``--store`` and ``--split``, for the commands that read slices of a split (patches, evaluate, timing)."""
    parser.add_argument("--store", required=True, type=existing_dir, help="slice store folder (mrsr ingest)")
    parser.add_argument("--split", required=True, type=existing_file, help="split.csv (mrsr split)")


def read_split(path: Path) -> pd.DataFrame:
    """split.csv with its keys as text (a numeric-looking patient ID keeps its leading zeros)."""
    return pd.read_csv(path, dtype={"patient_id": str, "series_key": str})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", required=True, type=existing_dir, help="slice store folder (mrsr ingest)")
    parser.add_argument("--config", required=True, type=Path, help="workflow config (its split section)")
    parser.add_argument("--out", required=True, type=output_file, help="split.csv to write (split.json beside it)")
    parser.add_argument("--by", choices=["series", "patient"], help="split unit (default: the config's split.by)")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)["split"]
    by = args.by or cfg["by"]
    series = make_split(read_index(args.store), by, cfg["seed"],
                        cfg["train_sequences"], cfg["test_sequences"])
    write_csv(args.out, series)
    summary = summarize(series, by, cfg["seed"])
    write_json(args.out.with_suffix(".json"), summary)
    print(f"split by {by}: {summary['train']['series']} train / {summary['test']['series']} test series, "
          f"{summary['test_patients_in_train']} of {summary['test']['patients']} test patients also in training")
    return 0
