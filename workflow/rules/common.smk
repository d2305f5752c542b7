# Names, paths and helpers shared by every rule file (no rules here).
import os

import yaml
from snakemake.exceptions import WorkflowError

from mrsr.config import Job, file_sha256, job_seeds, job_train_settings, leakage_job, model_options, training_jobs
from mrsr.workflow_support import (BY_PATIENT, SEED_DIR, SEED_RE, SPLIT_DIR_RE, folder_fingerprint, job_pattern, seed_dir,
                                   source_digest)

# Each profile writes to its own folders, so a quick run and a paper run coexist and neither can
# read the other's files. dvc.yaml tracks the default profile's folders (its `vars: profile`).
PROFILE = config["profile"]
PREPARED = f"data/prepared/{PROFILE}"
STORE = f"{PREPARED}/store"
SPLIT = f"{PREPARED}/split.csv"
MODELS = f"models/{PROFILE}"
RESULTS = f"results/{PROFILE}"
REPORT = f"reports/{PROFILE}/report.html"
LOGS = f"logs/{PROFILE}"
BENCH = f"benchmarks/{PROFILE}"
DOWNLOADED = "data/raw/tcia/downloaded.json"  # download_tcia's output (see data.smk), in the download folder
JOBS = training_jobs(config)
SCALES = config["scales"]
# The {job} wildcard of train and evaluate_model is a whole job name (proposed_multi_x2, srcnn_x3);
# JOB_RE, its constraint, lists every training job's name (mrsr.workflow_support.job_pattern, made
# from mrsr.config.Job and the model registry), so a rule matches exactly the names Job.from_name
# accepts, and wildcard_job gives the Job.
JOB_RE = job_pattern()


def wildcard_job(wildcards):
    """The Job of a rule's {job} wildcard."""
    return Job.from_name(wildcards.job)


# Each job is trained once per seed (train.seeds), into a folder of its own: SEED_DIR ("seed{seed}",
# defined with its wildcard constraint SEED_RE in mrsr.workflow_support) is the path segment of the
# rules with a seed, so job names stay proposed_multi_x2 everywhere. RUNS: every (job, seed);
# FIRST_RUNS: each job's first seed, the one Table 3, Figure 3 and the training curves show.
RUNS = [(job, seed) for job in JOBS for seed in job_seeds(config, job)]
FIRST_RUNS = [(job, job_seeds(config, job)[0]) for job in JOBS]


def per_image(folder, runs, scales):
    """Per-image CSVs in ``folder`` of bicubic at ``scales`` and of each (job, seed) of ``runs``."""
    return ([f"{folder}/bicubic_x{s}.csv" for s in scales]
            + [f"{folder}/{seed_dir(seed)}/{job.name}.csv" for job, seed in runs])


PER_IMAGE = per_image(f"{RESULTS}/metrics/per_image", RUNS, SCALES)
EXAMPLES = ([f"{RESULTS}/examples/bicubic_x{s}.npz" for s in SCALES]
            + [f"{RESULTS}/examples/{seed_dir(seed)}/{job.name}.npz" for job, seed in FIRST_RUNS])

# The split-leakage check (config key `leakage`): LEAKAGE's job is also trained on a split by
# patient of the same data and evaluated on that split's test set, with bicubic there too. The same
# rules make both: their {splitdir} wildcard is "" for the profile's split and BY_PATIENT
# ("by-patient/", mrsr.workflow_support) for the check, a folder inside each stage's own (data/prepared/<profile>/,
# models/<profile>/, results/<profile>/metrics/per_image/), so dvc.yaml's outs hold its files.
LEAKAGE = leakage_job(config)
LEAKAGE_RUNS = [(LEAKAGE, seed) for seed in job_seeds(config, LEAKAGE)] if LEAKAGE else []
LEAKAGE_PER_IMAGE = per_image(f"{RESULTS}/metrics/per_image/{BY_PATIENT}".rstrip("/"), LEAKAGE_RUNS,
                              [LEAKAGE.scale] if LEAKAGE else [])
LEAKAGE_SPLIT = f"{PREPARED}/{BY_PATIENT}split.json"

# Every step reads the profile file itself (the Snakefile checks that `config` is exactly that
# file): nothing is written while the workflow is parsed, so a dry run of any profile changes
# nothing a running job reads. It is an ancient() input: editing one section does not rerun every
# job; each rule lists the config sections it uses (and the code it runs) as params, which
# Snakemake's rerun triggers compare job by job. MRSR_CONFIG_SHA256, exported to every job's
# shell, makes a job refuse a profile file edited after this run was planned.
CONFIG = PROFILE_FILE
CONFIG_TEXT = yaml.safe_dump(config, sort_keys=True)
shell.prefix(f"export MRSR_CONFIG_SHA256={file_sha256(PROFILE_FILE)}; ")


def code(command, model=None):
    """Digest of the package source `mrsr <command>` runs, for `model`'s jobs when given (a params
    entry: changed code reruns the jobs that run it; editing one model's file reruns that model's
    jobs and those over every model, as dvc.yaml's deps on the same files make `dvc repro` do)."""
    return source_digest(command, model)


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


def ingest_input(wildcards):
    source = config["data"]["source"]
    if source == "sample":
        return config["data"]["sample_dir"]
    if source == "local":
        return config["data"]["local_dir"]
    return DOWNLOADED

