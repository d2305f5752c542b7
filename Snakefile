# mrsr workflow: raw data -> slice store -> split -> patches -> training -> evaluation -> report.
# Rules are thin calls of the `mrsr` command; all logic lives in src/mrsr (one hop from each rule).
# Run: snakemake --cores 8 all   (the paper's protocol: add --configfile config/paper.yaml)
import os

from mrsr.config import ConfigError, validate_config

configfile: "config.yaml"

try:
    validate_config(config, base_dir=workflow.basedir)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}")

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/timing.smk"
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
