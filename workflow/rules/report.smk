# The HTML report. Code: src/mrsr/report.py, template src/mrsr/templates/report.html.j2.


rule report:
    input:
        summary="results/metrics/summary.csv",
        per_image=[f"results/metrics/per_image/{name}.csv" for name in EVALUATIONS],
        examples=[f"results/examples/{name}.npz" for name in EVALUATIONS],
        histories=[f"models/{job.name}.history.csv" for job in JOBS],
        split="data/prepared/split.json",
        ingest=rules.ingest.output.summary,
        rejected=rules.ingest.output.rejected,
        timing=rules.timing.output.table,
        machine=rules.timing.output.machine,
    output:
        "reports/report.html",
    params:
        config=CONFIG,
        profile=config["profile"],
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr report --config {params.config} --out {output} > {log} 2>&1"
