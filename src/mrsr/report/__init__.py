"""``mrsr report``: one self-contained HTML file (Jinja2; images embedded; works offline).

It shows Table 1 (upsampling strategies, with bicubic and each strategy's initialisation and budget),
Table 2 (PSNR/SSIM per method and scale; for a trained network the mean over its training seeds with
the spread across them) and Table 3 (CPU time per slice, from ``mrsr timing``, with the bf16 path)
beside the paper's figures with the differences and the gains over bicubic; a row at or below
bicubic carries a marker (:func:`~mrsr.report.tables.below_bicubic`). The section "Series vs patient split"
(:func:`~mrsr.report.tables.leakage_comparison`) shows what the paper's split by series is worth against a split by
patient of the same data. Then a Figure-3-style visual comparison
(Table 2's methods in its order, PSNR/SSIM per panel, error maps on one colour scale), training
curves, per-image metric distributions, the dataset and split (every series and patient by side:
training, validation slices, test), rejected files, the metric recipe, hardware, versions, git
revision and configuration.

This module renders (templates/report.html.j2) and is the command; the rows are computed in
:mod:`mrsr.report.tables` (Tables 1 and 2, the split comparison), :mod:`mrsr.report.table3` and
:mod:`mrsr.report.recipes`, the figures drawn in :mod:`mrsr.report.figures`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
import yaml

from mrsr import paper
from mrsr.config import border_pixels, job_seeds, load_config, training_jobs
from mrsr.errors import existing_file, output_file
from mrsr.io import write_bytes, write_text
from mrsr.metrics import RECIPE
from mrsr.provenance import git_revision, hardware, versions
from mrsr.report.figures import distributions, empty_png, figure3, figure3_panels, png_bytes_uri, training_curves
from mrsr.report.recipes import COLUMNS as RECIPE_COLUMNS
from mrsr.report.recipes import recipe_rows
from mrsr.report.table3 import bf16_rows, size_labels, table3_rows
from mrsr.data.split import read_split
from mrsr.data.store import read_index
from mrsr.report.tables import (_stem, leakage_comparison, proposed_init, read_summary, seed_mean_images, seeds_note,
                                split_rows, table1_differences, table1_rows, table2_groups, table2_rows)


@dataclass(frozen=True)
class ReportInputs:
    """Every artefact the report reads, as the workflow's report rule declares them.

    Evaluations and jobs are named by their file stems (``proposed_multi_x2``), so the report shows
    exactly what the rule passed and never guesses a path.
    """

    summary: Path
    per_image: list[Path]
    examples: list[Path]
    histories: list[Path]
    split: Path
    ingest: Path
    rejected: Path
    timing: Path | None = None
    machine: Path | None = None
    # The leakage check (config key ``leakage``): per-image CSVs on the split by patient and its split.json.
    leakage_per_image: list[Path] = field(default_factory=list)
    leakage_split: Path | None = None
    # The weights sidecars of each job's first seed: how each method was trained (its recipe).
    sidecars: list[Path] = field(default_factory=list)
    # split.csv and the store's index.csv: which series and patients are in training, validation and test.
    split_csv: Path | None = None
    index: Path | None = None


def render(config: dict[str, Any], inputs: ReportInputs, curves: dict[str, bytes | None] | None = None) -> str:
    """The report's HTML for ``config`` from ``inputs`` (``curves``: training figures already drawn)."""
    jobs = training_jobs(config)
    summary = read_summary(inputs.summary)
    per_image = seed_mean_images(inputs.per_image)  # every seed's files; a slice's metrics averaged over seeds
    histories = {_stem(p): pd.read_csv(p) for p in inputs.histories}
    figure_scale = min(config["scales"])  # one scale: every panel shows the same slice and region
    examples = {_stem(p): p for p in inputs.examples if _stem(p).endswith(f"_x{figure_scale}")}
    figure_examples = {}
    for name, _ in figure3_panels(list(examples)):  # what Table 2 shows: Ours is the multi-resolution network
        with np.load(examples[name]) as data:
            if "sr" in data.files:
                figure_examples[name] = {k: data[k] for k in ("hr", "sr")}
                if "slice_id" in data.files:
                    figure_examples[name]["slice_id"] = str(data["slice_id"])
    split = json.loads(Path(inputs.split).read_text())
    ingest = json.loads(Path(inputs.ingest).read_text())
    rejected = pd.read_csv(inputs.rejected)
    # No timing results (a report rendered before the timing rule ran): Table 3 says so.
    timing = (pd.read_csv(inputs.timing, keep_default_na=False, na_values=[""]) if inputs.timing
              else pd.DataFrame(columns=["name", "method", "strategy", "scale", "size", "hr_shape", "dtype", "timed_as"]))
    machine = json.loads(Path(inputs.machine).read_text()) if inputs.machine else None
    curves = training_curves(histories) if curves is None else curves
    table1 = table1_rows(summary, config)
    table2 = table2_rows(summary, per_image, config)
    leakage_split = json.loads(Path(inputs.leakage_split).read_text()) if inputs.leakage_split else None
    leakage = leakage_comparison(config, summary, per_image, list(inputs.leakage_per_image), split, leakage_split)
    seed_lists = {job.name: job_seeds(config, job) for job in jobs}
    recipes = recipe_rows(json.loads(Path(p).read_text()) for p in inputs.sidecars)
    split_table = (split_rows(read_split(inputs.split_csv), read_index(Path(inputs.index).parent), config)
                   if inputs.split_csv and inputs.index else [])
    env = jinja2.Environment(loader=jinja2.PackageLoader("mrsr.report", "templates"), autoescape=jinja2.select_autoescape(),
                             undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2").render(
        profile=config["profile"], data_source=config["data"]["source"], config_yaml=yaml.safe_dump(config, sort_keys=False),
        table1=table1, table1_differs=table1_differences(table1), table2=table2_groups(table2),
        seeds=seeds_note(table1 + table2), leakage=leakage,
        seed_lists=sorted({tuple(v) for v in seed_lists.values()}),
        summary_ours=paper.SUMMARY_OURS, figure3=figure3(figure_examples, border_pixels(config, figure_scale)),
        curves={k: png_bytes_uri(v) for k, v in curves.items() if v},
        distributions=distributions(per_image),
        split=split, split_table=split_table, val_slices=config["train"]["val_slices"], ingest=ingest, rejected=rejected.to_dict("records"), recipe=RECIPE.strip(),
        versions=versions(), hardware=hardware(), revision=git_revision(), jobs=[j.name for j in jobs],
        model_init=proposed_init(config),
        table3=table3_rows(timing), table3_sizes=size_labels(timing), bf16=bf16_rows(timing),
        timing_machine=machine, paper_table3_cpu=paper.TABLE3_CPU, recipes=recipes, recipe_columns=RECIPE_COLUMNS,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=existing_file, help="the run's profile file (YAML)")
    parser.add_argument("--summary", required=True, type=existing_file, help="summary.csv of mrsr summarize")
    parser.add_argument("--per-image", required=True, nargs="+", type=existing_file, help="per-image metric CSVs")
    parser.add_argument("--examples", nargs="*", default=[], type=existing_file, help="example .npz files for Figure 3")
    parser.add_argument("--histories", nargs="*", default=[], type=existing_file, help="training history CSVs")
    parser.add_argument("--split-summary", required=True, type=existing_file, help="split.json of mrsr split")
    parser.add_argument("--split-csv", type=existing_file, help="split.csv of mrsr split (the table of series by side)")
    parser.add_argument("--index", type=existing_file, help="index.csv of the slice store (validation slices per series)")
    parser.add_argument("--ingest", required=True, type=existing_file, help="ingest.json of the slice store")
    parser.add_argument("--rejected", required=True, type=existing_file, help="rejected.csv of the slice store")
    parser.add_argument("--timing", type=existing_file, help="table3.csv of mrsr timing (Table 3; optional)")
    parser.add_argument("--machine", type=existing_file, help="machine.json of mrsr timing (optional)")
    parser.add_argument("--leakage-per-image", nargs="*", default=[], type=existing_file,
                        help="per-image CSVs of the leakage check on the split by patient (bicubic and the job's seeds)")
    parser.add_argument("--leakage-split", type=existing_file, help="split.json of the leakage check's split by patient")
    parser.add_argument("--sidecars", nargs="*", default=[], type=existing_file,
                        help="weights sidecars (.json) of each job's first seed: the training-recipe table")
    parser.add_argument("--loss-plot", type=output_file, help="also write the training-loss figure here (PNG)")
    parser.add_argument("--psnr-plot", type=output_file, help="also write the validation-PSNR figure here (PNG)")
    parser.add_argument("--out", required=True, type=output_file, help="the HTML file to write")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    inputs = ReportInputs(summary=args.summary, per_image=args.per_image, examples=args.examples,
                          histories=args.histories, split=args.split_summary, ingest=args.ingest,
                          rejected=args.rejected, timing=args.timing, machine=args.machine,
                          leakage_per_image=args.leakage_per_image, leakage_split=args.leakage_split,
                          sidecars=args.sidecars, split_csv=args.split_csv, index=args.index)
    curves = training_curves({_stem(p): pd.read_csv(p) for p in args.histories})
    for key, target in (("loss", args.loss_plot), ("val_psnr", args.psnr_plot)):
        if target is not None:
            write_bytes(target, curves[key] or empty_png(f"no training histories: no {key} curve"))
    write_text(args.out, render(config, inputs, curves))
    print(f"wrote {args.out}")
    return 0
