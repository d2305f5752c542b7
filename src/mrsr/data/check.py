"""``mrsr check-config``: a profile checked before any job runs.

First the schema and the settings' consistency (:func:`mrsr.config.load_config`), then the dataset
the profile names, where it can be counted offline (the embedded sample or a local folder: NIfTI
volumes and DICOM headers, no pixel data; a TCIA download's patient list is checked by the schema
step): whether it can be split as configured (:func:`mrsr.data.split.split_problem`). The workflow's
ingest job repeats the dataset check on what it actually stored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mrsr.config import ConfigError, job_seeds, load_config, training_jobs
from mrsr.data.ingest import is_nifti, nifti_identity, nifti_stem
from mrsr.data.split import split_problem
from mrsr.data.store import series_key
from mrsr.io import list_files


def dataset_series(folder: Path) -> pd.DataFrame:
    """One row per series that ingest would find in ``folder`` (``series_key``, ``series_uid``,
    ``patient_id``), read from NIfTI names and DICOM headers only; unusable files are left out."""
    from mrsr.data.dicom import scan_dicom_file
    from mrsr.data.dicom_header import FileHeader

    rows = {}
    for path in list_files(folder, lambda where, reason: None):
        if path.name.startswith("."):
            continue
        if is_nifti(path):
            patient, uid = nifti_identity(path, folder)
            rows[uid] = (patient, nifti_stem(path))
        else:
            header = scan_dicom_file(path)
            if isinstance(header, FileHeader):
                rows.setdefault(header.series_uid, (header.patient_id, header.description))
    return pd.DataFrame([{"series_key": series_key(patient, description, uid), "series_uid": uid, "patient_id": patient}
                         for uid, (patient, description) in rows.items()],
                        columns=["series_key", "series_uid", "patient_id"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configfile", nargs="?", default="config.yaml",
                        help="YAML config to check (default: config.yaml); data folders are resolved "
                             "against the current folder")


def run(args: argparse.Namespace) -> int:
    # A ConfigError reaches mrsr.cli.main, which prints it as one line and exits 2.
    config = load_config(args.configfile, base_dir=Path.cwd())  # paths are relative to the repository
    data = config["data"]
    counted = ""
    if data["source"] in ("sample", "local"):
        folder = Path(data["sample_dir"] if data["source"] == "sample" else data["local_dir"])
        series = dataset_series(folder)
        problem = split_problem(series, config, str(folder))
        if problem:
            raise ConfigError(f"{args.configfile}: {problem}")
        counted = f"; {len(series)} series of {series['patient_id'].nunique()} patients in {folder}"
    jobs = training_jobs(config)
    runs = sum(len(job_seeds(config, job)) for job in jobs)
    print(f"{args.configfile}: valid; {len(jobs)} training jobs, {runs} training runs with their seeds{counted}")
    return 0
