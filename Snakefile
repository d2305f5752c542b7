# mrsr workflow: raw data -> slice store -> split -> patches -> training -> evaluation -> report.
# Rules are thin calls of the `mrsr` command; all logic lives in src/mrsr (one hop from each rule).
# Run: snakemake --cores 8 all   (the paper's protocol: add --configfile config/paper.yaml)
import os

from mrsr.config import ConfigError, validate_config
from mrsr.workflow_support import profile_file

# A profile is a complete statement of a run, and the file every job reads. Snakemake deep-merges
# --configfile over a workflow's `configfile:`, which would let quick-only keys of config.yaml leak
# into config/paper.yaml's jobs; so config.yaml is read only when no --configfile is given, and
# what would make `config` differ from the one profile file (several --configfile, --config
# key=value) is refused.
if not workflow.overwrite_configfiles:
    configfile: "config.yaml"

# Validation completes `config` in place with the schema's defaults (workflow/schemas/config.schema.yaml),
# as every job's load_config does with the same file: the rules read config[...] without fallbacks.
try:
    PROFILE_FILE = profile_file(workflow.overwrite_configfiles, workflow.config_settings.config, config)
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
        REPORT,
        rules.summarize.output.summary,


onsuccess:
    # Record in dvc.lock the stages of this profile that this run left up to date, when dvc.yaml lists
    # the profile. Skipped when DVC itself runs this workflow (`dvc repro` records them), in dry runs,
    # and with MRSR_NO_DVC_COMMIT set.
    if not os.environ.get("DVC_STAGE") and not os.environ.get("MRSR_NO_DVC_COMMIT") and os.path.isdir(".dvc"):
        shell("mrsr dvc-commit --configfile {PROFILE_FILE:q}")
