# One training job per (model, strategy, scale). Code: src/mrsr/train.py, models in src/mrsr/models/.


rule train:
    input:
        patches=f"{PREPARED}/patches/x{{scale}}.npz",
        config=ancient(CONFIG),
    output:
        weights=f"{MODELS}/{{job}}_x{{scale}}.safetensors",
        sidecar=f"{MODELS}/{{job}}_x{{scale}}.json",
        history=f"{MODELS}/{{job}}_x{{scale}}.history.csv",
    wildcard_constraints:
        job="[a-z0-9]+(_(single|double|multi))?",
        scale="[234]",
    params:
        # The job's own settings (global `train` plus its experiment's overrides) and its model's
        # options: a change to them reruns this job and no other.
        train=lambda wc: job_train_settings(config, Job.from_name(f"{wc.job}_x{wc.scale}")),
        model=lambda wc: config["model"].get(wc.job.split("_")[0], {}),
        threads=cpu_threads,
        code=code("train"),
    threads: whole_machine()
    resources:
        gpu=1,
        # Share of one GPU (src/mrsr/models/__init__.py, ModelSpec.gpu_slots: light baselines 1, the
        # proposed net, de-CNN and FSCWN 4). `--resources gpu_slots=8` packs jobs onto one card; without
        # it the resource is unlimited. SLURM ignores it: each job gets its own GPU (gpu=1).
        gpu_slots=lambda wc: Job.from_name(f"{wc.job}_x{wc.scale}").gpu_slots,
        runtime=lambda wc: 60 if config["profile"] == "paper" else 30,
        mem_mb=8000,
    log:
        f"{LOGS}/train/{{job}}_x{{scale}}.log",
    benchmark:
        f"{BENCH}/train/{{job}}_x{{scale}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr train --job {wildcards.job}_x{wildcards.scale} --patches {input.patches} --config {input.config}"
        " --threads {params.threads} --out {output.weights} > {log} 2>&1"


rule train_all:
    input:
        [f"{MODELS}/{job.name}.safetensors" for job in JOBS],
