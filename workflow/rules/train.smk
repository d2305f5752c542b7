# One training job per (model, strategy, scale) and seed. Code: src/mrsr/train.py, models in src/mrsr/models/.
# Each seed of train.seeds is a run of its own under models/<profile>/seed<k>/ (SEED_DIR, common.smk);
# {job}: a whole job name (JOB_RE, common.smk); {splitdir} "by-patient/": the leakage check's runs on
# the split by patient.


rule train:
    input:
        patches=lambda wc: f"{PREPARED}/{wc.splitdir}patches/x{wildcard_job(wc).scale}.npz",
        config=ancient(CONFIG),
    output:
        weights=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}.safetensors",
        sidecar=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}.json",
        history=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}.history.csv",
    wildcard_constraints:
        job=JOB_RE,
        seed=SEED_RE,
        splitdir=SPLIT_DIR_RE,
    params:
        # The run's own settings (global `train` plus its experiment's overrides, with this seed) and
        # its model's options: a change to them reruns this run and no other; adding a seed to
        # train.seeds adds runs and reruns none.
        train=lambda wc: job_train_settings(config, wildcard_job(wc), seed=int(wc.seed)),
        model=lambda wc: model_options(config, wildcard_job(wc).model),
        threads=cpu_threads,
        code=lambda wc: code("train", wildcard_job(wc).model),
    threads: whole_machine()
    resources:
        gpu=1,
        # Share of one GPU (src/mrsr/modelspec.py, ModelSpec.gpu_slots: light baselines 1, the
        # proposed net, de-CNN and FSCWN 4). `--resources gpu_slots=8` packs jobs onto one card; without
        # it the resource is unlimited. SLURM ignores it: each job gets its own GPU (gpu=1).
        gpu_slots=lambda wc: wildcard_job(wc).gpu_slots,
        runtime=lambda wc: 60 if config["profile"] == "paper" else 30,
        mem_mb=8000,
    log:
        f"{LOGS}/train/{{splitdir}}{SEED_DIR}/{{job}}.log",
    benchmark:
        f"{BENCH}/train/{{splitdir}}{SEED_DIR}/{{job}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr train --job {wildcards.job} --seed {wildcards.seed} --patches {input.patches}"
        " --config {input.config} --threads {params.threads} --out {output.weights} > {log} 2>&1"


rule train_all:
    input:
        [f"{MODELS}/{seed_dir(seed)}/{job.name}.safetensors" for job, seed in RUNS],
        # the leakage check's runs on the split by patient
        [f"{MODELS}/{BY_PATIENT}{seed_dir(seed)}/{job.name}.safetensors" for job, seed in LEAKAGE_RUNS],
