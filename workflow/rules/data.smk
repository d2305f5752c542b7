# Data preparation: ingest a source into the slice store, split it, cut patches per scale.
# Code: src/mrsr/data/{ingest,tcia,split,patches}.py


def ingest_input(wildcards):
    source = config["data"]["source"]
    if source == "sample":
        return config["data"]["sample_dir"]
    if source == "local":
        return config["data"]["local_dir"]
    return "data/raw/tcia/manifest.json"


rule download_tcia:
    output:
        "data/raw/tcia/manifest.json",
    params:
        tcia=config["data"].get("tcia", {}),
        collection=config["data"].get("tcia", {}).get("collection", "Brain-Tumor-Progression"),
        api_url=config["data"].get("tcia", {}).get("api_url", ""),
    log:
        "logs/download_tcia.log",
    benchmark:
        "benchmarks/download_tcia.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr download --source tcia --collection {params.collection:q} --api-url {params.api_url:q}"
        " --out data/raw/tcia > {log} 2>&1"


rule ingest:
    input:
        ingest_input,
    output:
        index=f"{STORE}/index.csv",
        summary=f"{STORE}/ingest.json",
        rejected=f"{STORE}/rejected.csv",
    params:
        source="local" if config["data"]["source"] == "tcia" else config["data"]["source"],
        folder=lambda wc, input: os.path.dirname(input[0]) if config["data"]["source"] == "tcia" else input[0],
    log:
        "logs/ingest.log",
    benchmark:
        "benchmarks/ingest.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr ingest --source {params.source} --input {params.folder} --out {STORE} > {log} 2>&1"


rule split:
    input:
        rules.ingest.output.index,
    output:
        csv=SPLIT,
        summary="data/prepared/split.json",
    params:
        split=config["split"],
    log:
        "logs/split.log",
    benchmark:
        "benchmarks/split.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr split --store {STORE} --config {CONFIG} --out {output.csv} > {log} 2>&1"


rule patches:
    input:
        index=rules.ingest.output.index,
        split=SPLIT,
    output:
        "data/prepared/patches/x{scale}.npz",
    params:
        patches=lambda wc: config["patches"][f"x{wc.scale}"],
        val_slices=config["train"].get("val_slices", 0),
    log:
        "logs/patches_x{scale}.log",
    benchmark:
        "benchmarks/patches_x{scale}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr patches --store {STORE} --split {input.split} --config {CONFIG} --scale {wildcards.scale}"
        " --out {output} > {log} 2>&1"


rule prepare:
    input:
        expand("data/prepared/patches/x{scale}.npz", scale=SCALES),
