# mrsr workflow: raw data -> slice store -> split -> patches -> training -> evaluation -> report.
# Rules are thin calls of the `mrsr` command; all logic lives in src/mrsr (one hop from each rule).
# Run: snakemake --cores 8 all   (the paper's protocol: add --configfile config/paper.yaml)
import os

import yaml

from mrsr.config import ConfigError, training_jobs, validate_config

configfile: "config.yaml"

try:
    validate_config(config, base_dir=workflow.basedir)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

STORE = "data/prepared/store"
SPLIT = "data/prepared/split.csv"
JOBS = training_jobs(config)
SCALES = config["scales"]
# The effective (merged, validated) config that every step reads; rewritten only when it changes,
# so its timestamp does not trigger reruns. Rules list the sections they use as params, which
# Snakemake's rerun triggers compare.
CONFIG = "results/config.yaml"
_text = yaml.safe_dump(config, sort_keys=True)
if not os.path.exists(CONFIG) or open(CONFIG).read() != _text:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG + ".tmp", "w") as fh:
        fh.write(_text)
    os.replace(CONFIG + ".tmp", CONFIG)


def cpu_threads(wildcards, threads):
    """torch threads for a job: what Snakemake granted, capped at this machine's cores."""
    return min(threads, os.cpu_count() or 1)


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "reports/report.html",
        "results/metrics/summary.csv",


onsuccess:
    # Record the outputs in dvc.lock so `dvc status` agrees with what Snakemake built. Skipped when
    # DVC itself runs this workflow (`dvc repro` records them), and in dry runs.
    if not os.environ.get("DVC_STAGE") and not os.environ.get("MRSR_NO_DVC_COMMIT") and os.path.isdir(".dvc"):
        shell("mrsr dvc-commit")
