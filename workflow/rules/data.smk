# Data preparation: ingest a source into the slice store, split it, cut patches per scale.
# Code: src/mrsr/data/{ingest,tcia,split,patches}.py


# The output is a copy of the downloader's manifest.json taken once the download succeeded, not
# manifest.json itself: Snakemake deletes a job's outputs before running it, and manifest.json is
# the record that lets a rerun (forced, or after a config change) skip the series already verified.
# The download folder is shared by every profile: a verified series is the same whoever asked.
rule download_tcia:
    output:
        DOWNLOADED,
    params:
        tcia=config["data"]["tcia"],
        collection=config["data"]["tcia"]["collection"],
        api_url=config["data"]["tcia"]["api_url"],
        # empty lists: every patient, every series description
        filters=lambda wc: " ".join(
            (["--patients", *config["data"]["tcia"]["patients"]] if config["data"]["tcia"]["patients"] else [])
            + (["--series-description", *config["data"]["tcia"]["series_descriptions"]]
               if config["data"]["tcia"]["series_descriptions"] else [])
        ),
        workers=config["data"]["tcia"]["workers"],
        code=code("download"),
    log:
        "logs/download_tcia.log",
    benchmark:
        "benchmarks/download_tcia.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr download --source tcia --collection {params.collection:q} --api-url {params.api_url:q}"
        " --workers {params.workers} {params.filters} --out data/raw/tcia > {log} 2>&1"
        " && cp data/raw/tcia/manifest.json {output}"


rule ingest:
    input:
        ingest_input,
        # read only to refuse a dataset this profile cannot split, before the jobs after ingest run
        config=ancient(CONFIG),
    output:
        index=f"{STORE}/index.csv",
        summary=f"{STORE}/ingest.json",
        rejected=f"{STORE}/rejected.csv",
    params:
        store=lambda wc, output: os.path.dirname(output.index),
        source="local" if config["data"]["source"] == "tcia" else config["data"]["source"],
        folder=lambda wc, input: os.path.dirname(input[0]) if config["data"]["source"] == "tcia" else input[0],
        # What the folder holds (names and sizes): adding or replacing source files reruns ingest.
        source_files=lambda wc: folder_fingerprint(ingest_input(wc)) if config["data"]["source"] != "tcia" else "",
        code=code("ingest"),
    log:
        f"{LOGS}/ingest.log",
    benchmark:
        f"{BENCH}/ingest.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr ingest --source {params.source} --input {params.folder} --out {params.store}"
        " --check-split {input.config} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 2; }}"


# {splitdir}: "" for the profile's split (split.by), "by-patient/" for the leakage check's split by
# patient (common.smk), with the same seed and counts.
rule split:
    input:
        index=rules.ingest.output.index,
        config=ancient(CONFIG),
    output:
        csv=f"{PREPARED}/{{splitdir}}split.csv",
        summary=f"{PREPARED}/{{splitdir}}split.json",
    wildcard_constraints:
        splitdir=SPLIT_DIR_RE,
    params:
        store=lambda wc, input: os.path.dirname(input.index),
        split=config["split"],
        by=lambda wc: "patient" if wc.splitdir else config["split"]["by"],
        code=code("split"),
    log:
        f"{LOGS}/{{splitdir}}split.log",
    benchmark:
        f"{BENCH}/{{splitdir}}split.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr split --store {params.store} --config {input.config} --by {params.by} --out {output.csv} > {log} 2>&1"


rule patches:
    input:
        index=rules.ingest.output.index,
        split=f"{PREPARED}/{{splitdir}}split.csv",
        config=ancient(CONFIG),
    output:
        f"{PREPARED}/{{splitdir}}patches/x{{scale}}.npz",
    wildcard_constraints:
        scale="[234]",
        splitdir=SPLIT_DIR_RE,
    params:
        store=lambda wc, input: os.path.dirname(input.index),
        patches=lambda wc: config["patches"][f"x{wc.scale}"],
        val_slices=config["train"]["val_slices"],
        seed=config["split"]["seed"],
        code=code("patches"),
    log:
        f"{LOGS}/{{splitdir}}patches_x{{scale}}.log",
    benchmark:
        f"{BENCH}/{{splitdir}}patches_x{{scale}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr patches --store {params.store} --split {input.split} --config {input.config} --scale {wildcards.scale}"
        " --out {output} > {log} 2>&1"


rule prepare:
    input:
        expand(f"{PREPARED}/patches/x{{scale}}.npz", scale=SCALES),
        # the leakage check's split by patient
        [f"{PREPARED}/{BY_PATIENT}patches/x{LEAKAGE.scale}.npz"] if LEAKAGE else [],
