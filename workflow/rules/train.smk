# One training job per (model, strategy, scale). Code: src/mrsr/train.py, models in src/mrsr/models/.


rule train:
    input:
        patches="data/prepared/patches/x{scale}.npz",
    output:
        weights="models/{job}_x{scale}.safetensors",
        sidecar="models/{job}_x{scale}.json",
        history="models/{job}_x{scale}.history.csv",
    wildcard_constraints:
        job="[a-z0-9]+(_(single|double|multi))?",
        scale="[234]",
    params:
        config=CONFIG,
        train=config["train"],
        model=lambda wc: config["model"].get(wc.job.split("_")[0], {}),
        threads=cpu_threads,
    threads: workflow.cores
    resources:
        gpu=1,
        runtime=lambda wc: 60 if config["profile"] == "paper" else 30,
        mem_mb=8000,
    log:
        "logs/train/{job}_x{scale}.log",
    benchmark:
        "benchmarks/train/{job}_x{scale}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr train --job {wildcards.job}_x{wildcards.scale} --patches {input.patches} --config {params.config}"
        " --threads {params.threads} --out {output.weights} > {log} 2>&1"


rule train_all:
    input:
        [f"models/{job.name}.safetensors" for job in JOBS],
