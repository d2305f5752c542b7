# One training job per (model, strategy, scale) and seed. Code: src/mrsr/train.py, models in src/mrsr/models/.
# Each seed of train.seeds is a run of its own under models/<profile>/seed<k>/ (SEED_DIR, common.smk);
# {splitdir} "by-patient/": the leakage check's runs on the split by patient.


rule train:
    input:
        patches=f"{PREPARED}/{{splitdir}}patches/x{{scale}}.npz",
        config=ancient(CONFIG),
    output:
        weights=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}_x{{scale}}.safetensors",
        sidecar=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}_x{{scale}}.json",
        history=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}_x{{scale}}.history.csv",
    wildcard_constraints:
        job="[a-z0-9]+(_(single|double|multi))?",
        scale="[234]",
        seed=SEED_RE,
        splitdir=SPLIT_DIR_RE,
    params:
        # The run's own settings (global `train` plus its experiment's overrides, with this seed) and
        # its model's options: a change to them reruns this run and no other; adding a seed to
        # train.seeds adds runs and reruns none.
        train=lambda wc: job_train_settings(config, Job.from_name(f"{wc.job}_x{wc.scale}"), seed=int(wc.seed)),
        model=lambda wc: config["model"].get(wc.job.split("_")[0], {}),
        threads=cpu_threads,
        code=code("train"),
    threads: whole_machine()
    resources:
        gpu=1,
        # Share of one GPU (src/mrsr/models/base.py, SuperResolver.gpu_slots: light baselines 1, the
        # proposed net, de-CNN and FSCWN 4). `--resources gpu_slots=8` packs jobs onto one card; without
        # it the resource is unlimited. SLURM ignores it: each job gets its own GPU (gpu=1).
        gpu_slots=lambda wc: Job.from_name(f"{wc.job}_x{wc.scale}").gpu_slots,
        runtime=lambda wc: 60 if config["profile"] == "paper" else 30,
        mem_mb=8000,
    log:
        f"{LOGS}/train/{{splitdir}}{SEED_DIR}/{{job}}_x{{scale}}.log",
    benchmark:
        f"{BENCH}/train/{{splitdir}}{SEED_DIR}/{{job}}_x{{scale}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr train --job {wildcards.job}_x{wildcards.scale} --seed {wildcards.seed} --patches {input.patches}"
        " --config {input.config} --threads {params.threads} --out {output.weights} > {log} 2>&1"


rule train_all:
    input:
        [f"{MODELS}/{seed_dir(seed)}/{job.name}.safetensors" for job, seed in RUNS],
        # the leakage check's runs on the split by patient
        [f"{MODELS}/{BY_PATIENT}{seed_dir(seed)}/{job.name}.safetensors" for job, seed in LEAKAGE_RUNS],
