# Table 3: CPU inference time of every evaluated method and scale on test slices, in one process
# (one roofline, one thread count). Code: src/mrsr/timing.py (the measurement), src/mrsr/inference.py
# (the inference path evaluate and upscale run), src/mrsr/machine.py (roofline, CPU), src/mrsr/flops.py
# (FLOPs).


rule timing:
    input:
        # Each job's first seed: Table 3 times one model per job.
        weights=[f"{MODELS}/{seed_dir(seed)}/{job.name}.safetensors" for job, seed in FIRST_RUNS],
        index=rules.ingest.output.index,
        split=SPLIT,
        config=ancient(CONFIG),
    output:
        table=report(f"{RESULTS}/timing/table3.csv", category="Tables", caption="../report/table3.rst"),
        machine=f"{RESULTS}/timing/machine.json",
    params:
        store=lambda wc, input: os.path.dirname(input.index),
        timing=config["timing"],
        evaluate=config["evaluate"],
        # timing.threads: 0 = the cores Snakemake granted (all of them: the job runs alone, so
        # nothing else competes for the CPU while it measures).
        threads=lambda wc, threads: config["timing"]["threads"] or cpu_threads(wc, threads),
        code=code("timing"),
    threads: whole_machine()
    log:
        f"{LOGS}/timing.log",
    benchmark:
        f"{BENCH}/timing.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr timing --config {input.config} --store {params.store} --split {input.split} --threads {params.threads}"
        " --out {output.table} --machine {output.machine} {input.weights} > {log} 2>&1"
