# The HTML report. Code: src/mrsr/report/ (__init__.py renders; tables.py, table3.py, recipes.py,
# figures.py), template src/mrsr/report/templates/report.html.j2.
# The rule passes every artefact it declares; the report reads nothing else.


rule report:
    input:
        config=ancient(CONFIG),
        summary=rules.summarize.output.summary,
        # every seed's per-image metrics (Tables 1-2's paired intervals average a slice over the seeds);
        # Figure 3's examples and the training curves of each job's first seed
        per_image=PER_IMAGE,
        examples=EXAMPLES,
        histories=[f"{MODELS}/{seed_dir(seed)}/{job.name}.history.csv" for job, seed in FIRST_RUNS],
        sidecars=[f"{MODELS}/{seed_dir(seed)}/{job.name}.json" for job, seed in FIRST_RUNS],
        split=f"{PREPARED}/split.json",
        # the table of series and patients by side (validation slices: from the index, as patches chose them)
        split_csv=SPLIT,
        index=rules.ingest.output.index,
        # the leakage check (section "Series vs patient split"): its evaluations and split by patient
        leakage_per_image=LEAKAGE_PER_IMAGE,
        leakage_split=[LEAKAGE_SPLIT] if LEAKAGE else [],
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
        leakage=lambda wc, input: (f"--leakage-split {input.leakage_split} --leakage-per-image {input.leakage_per_image}"
                                   if LEAKAGE else ""),
        code=code("report"),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/mrsr.yaml"
    shell:
        "mrsr report --config {input.config} --summary {input.summary} --per-image {input.per_image}"
        " --examples {input.examples} --histories {input.histories} --sidecars {input.sidecars} --split-summary {input.split}"
        " --split-csv {input.split_csv} --index {input.index}"
        " --ingest {input.ingest} --rejected {input.rejected} --timing {input.timing} --machine {input.machine}"
        " {params.leakage} --loss-plot {output.loss} --psnr-plot {output.psnr} --out {output.html} > {log} 2>&1"
