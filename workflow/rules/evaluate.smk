# Metrics on the test split and the summary table. Code: src/mrsr/evaluate.py, src/mrsr/metrics.py,
# src/mrsr/inference.py (the inference path Table 3 times).
# A trained model is evaluated once per seed (per_image/seed<k>/, SEED_DIR); bicubic has no seed.
# {job}: a whole training job's name (JOB_RE, common.smk), so bicubic_x2 is evaluate_bicubic's alone.
# {splitdir} "by-patient/": the leakage check's evaluations on the split by patient's test set.


rule evaluate_bicubic:
    input:
        index=rules.ingest.output.index,
        split=f"{PREPARED}/{{splitdir}}split.csv",
        config=ancient(CONFIG),
    output:
        csv=f"{RESULTS}/metrics/per_image/{{splitdir}}bicubic_x{{scale}}.csv",
        example=f"{RESULTS}/examples/{{splitdir}}bicubic_x{{scale}}.npz",
    wildcard_constraints:
        scale="[234]",
        splitdir=SPLIT_DIR_RE,
    params:
        store=lambda wc, input: os.path.dirname(input.index),
        evaluate=config["evaluate"],
        code=code("evaluate", "bicubic"),
    log:
        f"{LOGS}/evaluate/{{splitdir}}bicubic_x{{scale}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{splitdir}}bicubic_x{{scale}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr evaluate --method bicubic --scale {wildcards.scale} --store {params.store} --split {input.split}"
        " --config {input.config} --out {output.csv} --example {output.example} > {log} 2>&1"


rule evaluate_model:
    input:
        weights=f"{MODELS}/{{splitdir}}{SEED_DIR}/{{job}}.safetensors",
        index=rules.ingest.output.index,
        split=f"{PREPARED}/{{splitdir}}split.csv",
        config=ancient(CONFIG),
    output:
        csv=f"{RESULTS}/metrics/per_image/{{splitdir}}{SEED_DIR}/{{job}}.csv",
        example=f"{RESULTS}/examples/{{splitdir}}{SEED_DIR}/{{job}}.npz",
    wildcard_constraints:
        job=JOB_RE,
        seed=SEED_RE,
        splitdir=SPLIT_DIR_RE,
    params:
        store=lambda wc, input: os.path.dirname(input.index),
        evaluate=config["evaluate"],
        model=lambda wc: wildcard_job(wc).model,
        scale=lambda wc: wildcard_job(wc).scale,
        threads=cpu_threads,
        code=lambda wc: code("evaluate", wildcard_job(wc).model),
    threads: whole_machine()
    log:
        f"{LOGS}/evaluate/{{splitdir}}{SEED_DIR}/{{job}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{splitdir}}{SEED_DIR}/{{job}}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr evaluate --method {params.model} --weights {input.weights} --scale {params.scale}"
        " --store {params.store} --split {input.split} --config {input.config} --threads {params.threads}"
        " --out {output.csv} --example {output.example} > {log} 2>&1"


# One row per (method, strategy, scale) of the profile's split: mean and spread over the seeds.
rule summarize:
    input:
        PER_IMAGE,
    output:
        summary=report(f"{RESULTS}/metrics/summary.csv", category="Tables", caption="../report/summary.rst"),
        headline=f"{RESULTS}/metrics/headline.json",
    params:
        code=code("summarize"),
    log:
        f"{LOGS}/summarize.log",
    benchmark:
        f"{BENCH}/summarize.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr summarize --out {output.summary} --headline {output.headline} {input} > {log} 2>&1"


rule evaluate_all:
    input:
        rules.summarize.output,
        LEAKAGE_PER_IMAGE,  # the leakage check's evaluations, which the report compares
