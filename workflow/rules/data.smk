# Data preparation: ingest a source into the slice store, split it, cut patches per scale.
# Code: src/mrsr/data/{ingest,tcia,split,patches}.py


# The output is a copy of the downloader's manifest.json taken once the download succeeded, not
# manifest.json itself: Snakemake deletes a job's outputs before running it, and manifest.json is
# the record that lets a rerun (forced, or after a config change) skip the series already verified.
rule download_tcia:
    output:
        DOWNLOADED,
    params:
        config=CONFIG,
        tcia=config["data"].get("tcia", {}),
        collection=config["data"].get("tcia", {}).get("collection", "Brain-Tumor-Progression"),
        api_url=config["data"].get("tcia", {}).get("api_url", ""),
        filters=lambda wc: " ".join(
            (["--patients", *config["data"]["tcia"]["patients"]] if config["data"].get("tcia", {}).get("patients") else [])
            + (["--series-description", *config["data"]["tcia"]["series_descriptions"]]
               if config["data"].get("tcia", {}).get("series_descriptions") else [])
        ),
        workers=config["data"].get("tcia", {}).get("workers", 2),
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
    output:
        index=f"{STORE}/index.csv",
        summary=f"{STORE}/ingest.json",
        rejected=f"{STORE}/rejected.csv",
    params:
        config=CONFIG,
        store=lambda wc, output: os.path.dirname(output.index),
        source="local" if config["data"]["source"] == "tcia" else config["data"]["source"],
        folder=lambda wc, input: os.path.dirname(input[0]) if config["data"]["source"] == "tcia" else input[0],
    log:
        "logs/ingest.log",
    benchmark:
        "benchmarks/ingest.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr ingest --source {params.source} --input {params.folder} --out {params.store} > {log} 2>&1"


rule split:
    input:
        rules.ingest.output.index,
    output:
        csv=SPLIT,
        summary="data/prepared/split.json",
    params:
        config=CONFIG,
        store=lambda wc, input: os.path.dirname(input[0]),
        split=config["split"],
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr split --store {params.store} --config {params.config} --out {output.csv} > {log} 2>&1"


rule patches:
    input:
        index=rules.ingest.output.index,
        split=SPLIT,
    output:
        "data/prepared/patches/x{scale}.npz",
    params:
        config=CONFIG,
        store=lambda wc, input: os.path.dirname(input.index),
        patches=lambda wc: config["patches"][f"x{wc.scale}"],
        val_slices=config["train"].get("val_slices", 0),
    log:
        "logs/patches_x{scale}.log",
    benchmark:
        "benchmarks/patches_x{scale}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr patches --store {params.store} --split {input.split} --config {params.config} --scale {wildcards.scale}"
        " --out {output} > {log} 2>&1"


rule prepare:
    input:
        expand("data/prepared/patches/x{scale}.npz", scale=SCALES),
