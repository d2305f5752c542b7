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

``split.test_series`` / ``split.test_patients`` pin the test side: it is then exactly the pinned
series and every series of the pinned patients (by patient: their whole patients), and training
draws its ``train_sequences`` units, seeded, from the rest. :func:`split_problem` says in one line
why a dataset cannot be split as configured (``mrsr check-config``, ``mrsr ingest --check-split``
and ``mrsr split`` refuse with it, naming the key and the count).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mrsr.config import ConfigError, load_config
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


def data_key(config: dict) -> str:
    """The config key that names the dataset (what a message about its size points at)."""
    return {"sample": "data.sample_dir", "local": "data.local_dir", "tcia": "data.tcia"}[config["data"]["source"]]


def pinned_rows(series: pd.DataFrame, test_series: list[str], test_patients: list[str]) -> pd.Series:
    """Which series are pinned to the test side: named in ``test_series`` (by series key or
    SeriesInstanceUID) or belonging to a patient of ``test_patients``.

    Raises:
        ConfigError: a pinned name is not in the data (naming the key and a few names that are).
    """
    for key, names, columns, what in (("split.test_series", test_series, ("series_key", "series_uid"), "series"),
                                      ("split.test_patients", test_patients, ("patient_id",), "patients")):
        known = set().union(*(set(series[c].astype(str)) for c in columns))
        missing = [n for n in names if n not in known]
        if missing:
            shown = ", ".join(sorted(series[columns[0]].astype(str).unique())[:4])
            raise ConfigError(f"config key '{key}': {missing[0]!r} is not in the data, whose "
                              f"{series[columns[0]].nunique()} {what} are {shown}{', ...' if series[columns[0]].nunique() > 4 else ''}")
    return (series["series_key"].isin(test_series) | series["series_uid"].astype(str).isin(test_series)
            | series["patient_id"].astype(str).isin(test_patients))


def split_problem(series: pd.DataFrame, config: dict, where: str = "") -> str | None:
    """Why ``series`` cannot be split as ``config`` says, in one line naming the key and the count; or None.

    A split needs 2 series (one to train on, one to test); 2 patients when ``split.by: patient`` or
    the leakage check (``leakage``, a split by patient beside the series split) needs them; and,
    with pinned test series or patients, a unit left over to train on.

    Args:
        series: one row per series, with ``series_key``, ``series_uid`` and ``patient_id``.
        config: the validated profile.
        where: the dataset's folder, for the message.
    """
    split = config["split"]
    dataset = f"{data_key(config)}{f' ({where})' if where else ''}"
    n_series, n_patients = len(series), series["patient_id"].nunique()
    if n_series < 2:
        return (f"config key '{data_key(config)}': {dataset} holds {n_series} series; a split needs at least 2 "
                "(one to train on, one to test)")
    by_patient = [key for key, on in (("split.by", split["by"] == "patient"), ("leakage", bool(config["leakage"])))
                  if on]
    if by_patient and n_patients < 2:
        why = "split.by: patient" if by_patient[0] == "split.by" else "the leakage check (a split by patient)"
        fix = "" if by_patient[0] == "split.by" else "; set leakage: null to skip the check"
        return (f"config key '{by_patient[0]}': {dataset} holds {n_patients} patient{'' if n_patients == 1 else 's'}; {why} needs at "
                f"least 2{fix}")
    try:
        pinned = pinned_rows(series, split["test_series"], split["test_patients"])
    except ConfigError as exc:
        return str(exc)
    if pinned.any():
        key = "split.test_series" if split["test_series"] else "split.test_patients"
        for by in ["series"] + (["patient"] if by_patient else []):
            test_patients = set(series.loc[pinned, "patient_id"])
            rest = ~series["patient_id"].isin(test_patients) if by == "patient" else ~pinned
            if not rest.any():
                return (f"config key '{key}': the pinned test set holds every {'patient' if by == 'patient' else 'series'} "
                        f"of {dataset}; none is left to train on")
    return None


def make_split(index: pd.DataFrame, by: str, seed: int, n_train: int, n_test: int,
               test_series: list[str] = (), test_patients: list[str] = ()) -> pd.DataFrame:
    """Series table with a ``split`` column; reproducible for a given index, unit, seed and pins.

    With ``test_series`` or ``test_patients`` the test side is exactly those series and every series of
    those patients (by patient: every series of their patients) and ``n_test`` is not used; the
    ``n_train`` training units are drawn from the rest.
    """
    series = (
        index.groupby("series_key", sort=True)
        .agg(patient_id=("patient_id", "first"), series_uid=("series_uid", "first"),
             series_description=("series_description", "first"), n_slices=("slice_id", "size"), norm=("max", "max"))
        .reset_index()
    )
    unit_col = "series_key" if by == "series" else "patient_id"
    pinned = pinned_rows(series, list(test_series), list(test_patients))
    if pinned.any():
        test_units = set(series.loc[pinned, unit_col])
        units = np.array(sorted(set(series[unit_col]) - test_units))
        if len(units) == 0:
            raise ConfigError("config key 'split.test_series': every unit is pinned for test; none is left to train on")
        order = np.random.default_rng(seed).permutation(len(units))
        train_units = set(units[order[:n_train]])
    else:
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


def check_splittable(index: pd.DataFrame, config: dict, where: str) -> None:
    """Raise :class:`ConfigError` with :func:`split_problem`'s line when the store ``index`` cannot be split."""
    series = index.groupby("series_key", sort=True).agg(patient_id=("patient_id", "first"),
                                                        series_uid=("series_uid", "first")).reset_index()
    problem = split_problem(series, config, where)
    if problem:
        raise ConfigError(problem)


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
    config = load_config(args.config)
    cfg = config["split"]
    by = args.by or cfg["by"]
    index = read_index(args.store)
    check_splittable(index, config, str(args.store))
    series = make_split(index, by, cfg["seed"], cfg["train_sequences"], cfg["test_sequences"],
                        cfg["test_series"], cfg["test_patients"])
    write_csv(args.out, series)
    summary = summarize(series, by, cfg["seed"])
    write_json(args.out.with_suffix(".json"), summary)
    print(f"split by {by}: {summary['train']['series']} train / {summary['test']['series']} test series, "
          f"{summary['test_patients_in_train']} of {summary['test']['patients']} test patients also in training")
    return 0
