# Metrics on the test split and the summary table. Code: src/mrsr/evaluate.py, src/mrsr/metrics.py.


rule evaluate_bicubic:
    input:
        index=rules.ingest.output.index,
        split=SPLIT,
    output:
        csv="results/metrics/per_image/bicubic_x{scale}.csv",
        example="results/examples/bicubic_x{scale}.npz",
    wildcard_constraints:
        scale="[234]",
    params:
        config=CONFIG,
        store=lambda wc, input: os.path.dirname(input.index),
        evaluate=config["evaluate"],
    log:
        "logs/evaluate/bicubic_x{scale}.log",
    benchmark:
        "benchmarks/evaluate/bicubic_x{scale}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr evaluate --method bicubic --scale {wildcards.scale} --store {params.store} --split {input.split}"
        " --config {params.config} --out {output.csv} --example {output.example} > {log} 2>&1"


rule evaluate_model:
    input:
        weights="models/{job}_x{scale}.safetensors",
        index=rules.ingest.output.index,
        split=SPLIT,
    output:
        csv="results/metrics/per_image/{job}_x{scale}.csv",
        example="results/examples/{job}_x{scale}.npz",
    wildcard_constraints:
        job="(?!bicubic)[a-z0-9]+(_(single|double|multi))?",
        scale="[234]",
    params:
        config=CONFIG,
        store=lambda wc, input: os.path.dirname(input.index),
        evaluate=config["evaluate"],
        model=lambda wc: wc.job.split("_")[0],
        threads=cpu_threads,
    threads: whole_machine()
    log:
        "logs/evaluate/{job}_x{scale}.log",
    benchmark:
        "benchmarks/evaluate/{job}_x{scale}.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr evaluate --method {params.model} --weights {input.weights} --scale {wildcards.scale}"
        " --store {params.store} --split {input.split} --config {params.config} --threads {params.threads}"
        " --out {output.csv} --example {output.example} > {log} 2>&1"


rule summarize:
    input:
        [f"results/metrics/per_image/{name}.csv" for name in EVALUATIONS],
    output:
        summary="results/metrics/summary.csv",
        headline="results/metrics/headline.json",
    log:
        "logs/summarize.log",
    benchmark:
        "benchmarks/summarize.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr summarize --out {output.summary} --headline {output.headline} {input} > {log} 2>&1"


rule evaluate_all:
    input:
        rules.summarize.output,
