# The HTML report. Code: src/mrsr/report.py, template src/mrsr/templates/report.html.j2.
# The rule passes every artefact it declares; report.py reads nothing else.


rule report:
    input:
        config=ancient(CONFIG),
        summary=rules.summarize.output.summary,
        per_image=[f"{RESULTS}/metrics/per_image/{name}.csv" for name in EVALUATIONS],
        examples=[f"{RESULTS}/examples/{name}.npz" for name in EVALUATIONS],
        histories=[f"{MODELS}/{job.name}.history.csv" for job in JOBS],
        split=rules.split.output.summary,
        ingest=rules.ingest.output.summary,
        rejected=rules.ingest.output.rejected,
        timing=rules.timing.output.table,
        machine=rules.timing.output.machine,
    output:
        html=report(REPORT, category="Report", caption="../report/report.rst"),
        loss=report(f"reports/{PROFILE}/figures/training_loss.png", category="Figures", caption="../report/loss.rst"),
        psnr=report(f"reports/{PROFILE}/figures/validation_psnr.png", category="Figures", caption="../report/psnr.rst"),
    params:
        # The report shows the whole configuration: any change to it re-renders the report.
        config=CONFIG_TEXT,
        code=code("report"),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr report --config {input.config} --summary {input.summary} --per-image {input.per_image}"
        " --examples {input.examples} --histories {input.histories} --split-summary {input.split}"
        " --ingest {input.ingest} --rejected {input.rejected} --timing {input.timing} --machine {input.machine}"
        " --loss-plot {output.loss} --psnr-plot {output.psnr} --out {output.html} > {log} 2>&1"
