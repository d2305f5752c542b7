# Names, paths and helpers shared by every rule file (no rules here).
import os

import yaml
from snakemake.exceptions import WorkflowError

from mrsr.config import Job, job_train_settings, training_jobs

STORE = "data/prepared/store"
SPLIT = "data/prepared/split.csv"
DOWNLOADED = "data/raw/tcia/downloaded.json"  # download_tcia's output (see data.smk), in the download folder
JOBS = training_jobs(config)
SCALES = config["scales"]
# The effective (merged, validated) config that every step reads; rewritten only when it changes,
# so its timestamp does not trigger reruns. Rules list the sections they use as params, which
# Snakemake's rerun triggers compare.
CONFIG = "results/config.yaml"
_text = yaml.safe_dump(config, sort_keys=True)
if not os.path.exists(CONFIG) or open(CONFIG).read() != _text:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(f"{CONFIG}.tmp", "w") as fh:
        fh.write(_text)
    os.replace(f"{CONFIG}.tmp", CONFIG)


def whole_machine():
    """Threads of the jobs that want every core (train, evaluate_model, timing): all that Snakemake
    was given with --cores. A dry run without --cores (``snakemake -n all``) gives none, and some
    Snakemake 9 releases then refuse ``workflow.cores``; this machine's core count stands in."""
    try:
        return workflow.cores
    except WorkflowError:
        return os.cpu_count() or 1


def cpu_threads(wildcards, threads):
    """torch threads for a job: what Snakemake granted, capped at this machine's cores."""
    return min(threads, os.cpu_count() or 1)

EVALUATIONS = [f"bicubic_x{s}" for s in SCALES] + [job.name for job in JOBS]


def ingest_input(wildcards):
    source = config["data"]["source"]
    if source == "sample":
        return config["data"]["sample_dir"]
    if source == "local":
        return config["data"]["local_dir"]
    return DOWNLOADED
