"""Report tables: ours beside the paper's, gains over bicubic and their paired intervals, every scale;
the below-bicubic marker, Table 1's bicubic row and initialisations, Figure 3's panels; the mean and
spread across training seeds; the section "Series vs patient split"."""

from __future__ import annotations

import copy
import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
import yaml

from mrsr.config import Job, job_train_settings
from mrsr.report import render
from mrsr.report.figures import figure3, figure3_panels
from mrsr.report.tables import (below_bicubic, best_baseline, bootstrap_diff, leakage_comparison, paired_comparison,
                                read_summary, seed_mean_images, strategy_init, table1_differences, table1_rows, table2_rows)
from report_fixtures import GAINS, LEAKAGE_LOSS, SEED_OFFSETS, build_results, full_report_config, report_config


def test_table2_rows_for_several_scales(default_config):
    rng = np.random.default_rng(0)
    per_image, summary = {}, []
    for scale in (2, 3, 4):
        base = 30 + rng.random(10)
        for method, strategy, gain in (("bicubic", "", 0.0), ("proposed", "multi", 1.0), ("proposed", "single", -0.5)):
            name = f"{method}_{strategy}_x{scale}" if strategy else f"{method}_x{scale}"
            psnr = base + gain
            per_image[name] = pd.DataFrame({"slice_id": [f"s{i}" for i in range(10)], "psnr": psnr})
            summary.append({"method": method, "strategy": strategy, "scale": scale, "psnr": psnr.mean(), "ssim": 0.9,
                            "n_images": 10, "psnr_std": psnr.std(), "ssim_std": 0.0, "psnr_fg": psnr.mean()})
    rows = table2_rows(pd.DataFrame(summary), per_image, default_config)
    assert [(r["method"], r["scale"]) for r in rows] == [(m, s) for s in (2, 3, 4) for m in ("Bicubic", "Ours")]
    for r in rows:
        if r["method"] == "Ours":
            assert r["gain"] == pytest.approx(1.0)
            assert r["ci"] == pytest.approx((1.0, 1.0, 1.0))  # a constant paired difference
            assert r["paper_gain"] == pytest.approx({2: 6.01, 3: 3.63, 4: 3.08}[r["scale"]])
    t1 = table1_rows(pd.DataFrame(summary), default_config)
    assert [r["strategy"] for r in t1] == ["Bicubic", "Single upsampling", "Multi-resolution upsampling"]
    assert t1[2]["diff_psnr"] == pytest.approx(t1[2]["psnr"] - 45.67)
    assert t1[0]["paper_psnr"] == 40.55 and t1[0]["paper_table"] == 2  # the paper's Table 1 has no bicubic row


def test_table2_takes_its_methods_order_and_names_from_the_model_spec(default_config, monkeypatch):
    """A model registered in the spec (not in the paper) gets a Table 2 row, named and placed by its entry."""
    from mrsr import modelspec

    monkeypatch.setitem(modelspec.MODEL_SPECS, "toy", modelspec.ModelSpec("toy", "mrsr.models.toy", "Toy", "Toy net"))
    per_image, summary = {}, []
    for method, gain in (("toy", 0.5), ("srcnn", 1.0), ("bicubic", 0.0)):
        psnr = 30 + gain + np.arange(8) / 10
        per_image[f"{method}_x2"] = pd.DataFrame({"slice_id": [f"s{i}" for i in range(8)], "psnr": psnr})
        summary.append({"method": method, "strategy": "", "scale": 2, "psnr": psnr.mean(), "ssim": 0.9, "n_images": 8,
                        "psnr_std": psnr.std(), "ssim_std": 0.0, "psnr_fg": psnr.mean()})
    rows = table2_rows(pd.DataFrame(summary), per_image, default_config)
    assert [r["method"] for r in rows] == ["Bicubic", "SRCNN", "Toy net"]
    assert rows[2]["paper_psnr"] is None and rows[2]["gain"] == pytest.approx(0.5)


def test_bootstrap_interval_contains_the_mean():
    a = np.arange(20.0)
    mean, lo, hi = bootstrap_diff(a + 0.5, a)
    assert mean == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    mean, lo, hi = bootstrap_diff(np.random.default_rng(1).normal(1, 1, 200), np.zeros(200))
    assert lo < mean < hi and lo > 0.5


def _images(psnr: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"slice_id": [f"s{i}" for i in range(len(psnr))], "psnr": psnr})


def test_every_method_is_compared_with_the_best_baseline_of_its_scale(default_config):
    rng = np.random.default_rng(3)
    base = 30 + rng.random(12)
    gains = {"bicubic": 0.0, "srcnn": 0.4, "fscwn": 0.9, "proposed": 1.5}  # fscwn: the best baseline
    per_image, summary = {}, []
    for method, gain in gains.items():
        strategy = "multi" if method == "proposed" else ""
        psnr = base + gain + (0.01 * rng.standard_normal(12) if method == "srcnn" else 0)
        per_image[f"{method}_{strategy}_x2" if strategy else f"{method}_x2"] = _images(psnr)
        summary.append({"method": method, "strategy": strategy, "scale": 2, "psnr": psnr.mean(), "ssim": 0.9,
                        "n_images": 12, "psnr_std": psnr.std(), "ssim_std": 0.0, "psnr_fg": psnr.mean()})
    summary = pd.DataFrame(summary)
    assert best_baseline(summary.set_index("method")) == "fscwn"
    rows = {r["method"]: r for r in table2_rows(summary, per_image, default_config)}
    assert rows["FSCWN"]["is_best_baseline"] and "vs_best" not in rows["FSCWN"]
    ours = rows["Ours"]["vs_best"]
    assert ours["ci"] == pytest.approx((0.6, 0.6, 0.6)) and ours["n"] == 12
    assert ours["p"] < 0.001  # 12 paired slices, all better: the exact two-sided p is 2 / 2**12
    assert rows["Bicubic"]["vs_best"]["ci"][0] == pytest.approx(-0.9)
    assert rows["SRCNN"]["best_baseline"] == "FSCWN"


def test_paired_comparison_by_hand():
    a, b = _images(np.array([31.0, 32, 33, 34, 35, 36, 37])), _images(np.array([30.0, 31, 32, 33, 34, 35, 38]))
    out = paired_comparison(a, b)  # differences: six of +1, one of -1
    assert out["ci"][0] == pytest.approx(5 / 7) and out["n"] == 7
    # Wilcoxon signed-rank by hand: all |d| tie (rank 4 each), so W- = 4 x (negative signs), and under
    # H0 the signs are fair coins: two-sided p = 2 * P(at most 1 of 7 negative) = 2 * 8 / 128.
    assert out["p"] == pytest.approx(0.125)
    assert paired_comparison(a, a)["p"] is None  # no differences: no test
    assert paired_comparison(a.head(5), b.head(5))["p"] is None  # too few slices


QUICK = {"epochs": 4, "steps_per_epoch": 50, "batch_size": 32}


def test_below_bicubic_decides_the_marker():
    assert below_bicubic(35.0, 35.5, "quick", QUICK) == {
        "tag": "below bicubic", "gap": "-0.50 dB", "detail": "quick profile, trained 4 epochs x 50 steps x 32 only"}
    assert below_bicubic(35.5, 35.5, "quick", QUICK)["tag"] == "at bicubic"  # no gain is no gain
    assert below_bicubic(35.51, 35.5, "quick", QUICK) is None
    assert below_bicubic(35.0, None, "quick", QUICK) is None  # no bicubic row to compare with
    # The paper profile's marker excuses nothing; a null steps_per_epoch is a full pass.
    assert below_bicubic(35.0, 35.5, "paper", QUICK) == {"tag": "below bicubic", "gap": "-0.50 dB", "detail": ""}
    assert "100 epochs x full pass x 128" in below_bicubic(
        1.0, 2.0, "quick", {"epochs": 100, "steps_per_epoch": None, "batch_size": 128})["detail"]


@pytest.fixture(scope="module")
def full(tmp_path_factory, default_config, root):
    """The fixture's results tree of all 18 jobs (report_fixtures.GAINS: ESPCN and single below bicubic)
    and its report: (config, inputs, summary, per-image frames, HTML)."""
    config = full_report_config(default_config, yaml.safe_load((root / "config/paper.yaml").read_text()))
    inputs = build_results(tmp_path_factory.mktemp("full"), config)
    summary = pd.read_csv(inputs.summary, keep_default_na=False, dtype={"strategy": str})
    per_image = {p.name.split(".")[0]: pd.read_csv(p) for p in inputs.per_image}
    return config, inputs, summary, per_image, render(config, inputs)


def test_table2_marks_the_rows_below_bicubic_by_hand(full):
    config, inputs, summary, per_image, html = full
    rows = table2_rows(summary, per_image, config)
    bicubic = {r["scale"]: r["psnr"] for r in rows if r["method"] == "Bicubic"}
    marked = {(r["method"], r["scale"]) for r in rows if r["note"]}
    assert marked == {(r["method"], r["scale"]) for r in rows if r["method"] != "Bicubic" and r["psnr"] <= bicubic[r["scale"]]}
    assert marked == {("ESPCN", 2), ("ESPCN", 3), ("ESPCN", 4)}  # the fixture's one baseline below bicubic
    espcn, srcnn = (next(r for r in rows if r["method"] == m and r["scale"] == 2) for m in ("ESPCN", "SRCNN"))
    assert srcnn["psnr"] > bicubic[2] and srcnn["note"] is None
    assert espcn["note"]["gap"] == f"{espcn['psnr'] - bicubic[2]:+.2f} dB"
    own = job_train_settings(config, Job("espcn", None, 2))  # ESPCN's own budget, not the global one
    assert own["steps_per_epoch"] != config["train"]["steps_per_epoch"]
    assert espcn["note"]["detail"] == (f"quick profile, trained {own['epochs']} epochs x {own['steps_per_epoch']} steps"
                                       f" x {own['batch_size']} only")
    table2 = re.search(r'<table id="table2-data".*?</table>', html, re.S).group(0)
    for line in re.findall(r'<tr><td class="l">.*?</tr>', table2, re.S):
        assert ('class="flag">below bicubic<' in line) == line.startswith('<tr><td class="l">ESPCN<'), line
    paper = copy.deepcopy(config) | {"profile": "paper"}
    assert [r["note"]["detail"] for r in table2_rows(summary, per_image, paper) if r["note"]] == ["", "", ""]


def test_table1_has_bicubic_the_markers_and_each_initialisation(full, default_config, root):
    config, inputs, summary, per_image, html = full
    rows = table1_rows(summary, config)
    assert [r["strategy"] for r in rows] == ["Bicubic", "Single upsampling", "Double upsampling", "Multi-resolution upsampling"]
    bic = summary[(summary["method"] == "bicubic") & (summary["scale"] == 2)]["psnr"].item()
    assert rows[0]["psnr"] == bic and rows[0]["note"] is None and rows[0]["init"] is None
    assert [r["note"] is not None for r in rows[1:]] == [r["psnr"] <= bic for r in rows[1:]] == [True, False, False]
    assert rows[1]["note"]["detail"] == "quick profile, trained 4 epochs x 12 steps x 32 only"
    # Quick profile: the single strategy has no LR-image deconvolution, so it does not start as bicubic.
    assert [r["init"] for r in rows[1:]] == ["He; feature deconv. zero: starts as a blank image"] + 2 * [
        "He; LR-image deconv. bicubic, feature deconv. zero: starts as bicubic"]
    assert table1_differences(rows) == {"init": True, "schedule": False}
    table1 = re.search(r'<table id="table1-data".*?</table>', html, re.S).group(0)
    assert "<td class=\"l\">Bicubic</td>" in table1 and table1.count('class="flag">below bicubic<') == 1 and "<th class=\"l\">Budget</th>" not in table1
    # the quick budget with config/paper.yaml's proposed recipe (Adam 1e-4), as full_report_config mixes them
    assert "The strategies do not start alike" in html and "the same budget, 4 epochs x 12 steps x 32, adam lr 0.0001" in html
    # A strategy given its own budget: the table gets a Budget column.
    config = copy.deepcopy(config)
    config["experiments"][1]["train"] = {"steps_per_epoch": 30}
    assert table1_differences(table1_rows(summary, config)) == {"init": True, "schedule": True}
    assert "<th class=\"l\">Budget</th>" in render(config, inputs, curves={})
    # The paper profile: the bicubic/zero start for all three strategies and one budget, so
    # only the start differs (single has no image path); with He everywhere nothing differs.
    paper = yaml.safe_load((root / "config/paper.yaml").read_text())
    assert [strategy_init(paper, s) for s in ("single", "double", "multi")] == [
        "He; feature deconv. zero: starts as a blank image"] + 2 * [
        "He; LR-image deconv. bicubic, feature deconv. zero: starts as bicubic"]
    assert table1_differences(table1_rows(summary, paper)) == {"init": True, "schedule": False}
    paper["model"]["proposed"].update(image_deconv_init="he", feature_deconv_init="he")
    assert {strategy_init(paper, s) for s in ("single", "double", "multi")} == {"He (as the paper)"}
    rows = table1_rows(summary, paper)
    assert table1_differences(rows) == {"init": False, "schedule": False}
    assert rows[1]["note"] == {"tag": "below bicubic", "gap": f"{rows[1]['psnr'] - bic:+.2f} dB", "detail": ""}


def test_figure3_panels_follow_table2(full):
    config, inputs, summary, per_image, _ = full
    names = [p.name.split(".")[0] for p in inputs.examples if p.name.endswith("_x2.npz")]
    panels = figure3_panels(names[::-1])  # the input order does not matter
    table2 = [r["method"] for r in table2_rows(summary, per_image, config) if r["scale"] == 2]
    assert [title for _, title in panels] == table2 == ["Bicubic", "SRCNN", "ESPCN", "FSRCNN", "de-CNN", "FSCWN", "Ours"]
    assert [name for name, _ in panels] == ["bicubic_x2", "srcnn_x2", "espcn_x2", "fsrcnn_x2", "decnn_x2", "fscwn_x2",
                                            "proposed_multi_x2"]  # Ours: the multi-resolution network, as in Table 2
    examples, paths = {}, {p.name.split(".")[0]: p for p in inputs.examples}
    for name in names:
        with np.load(paths[name]) as data:
            examples[name] = {"hr": data["hr"], "sr": data["sr"]}
    figure = figure3(examples, border=2)
    assert [c["title"] for c in figure["columns"]] == ["HR (reference)"] + table2
    for column in figure["columns"]:
        assert all(column[k].startswith("data:image/png;base64,") for k in ("whole", "zoom"))
        assert (column["error"] is None) == (column["title"] == "HR (reference)")
    assert re.fullmatch(r"\d+\.\d\d dB / \d\.\d{4}", figure["columns"][1]["detail"])
    assert figure["colour_bar"].startswith("data:image/png;base64,")
    assert figure3({}) is None


def _leakage(config, inputs):
    summary = read_summary(inputs.summary)
    return leakage_comparison(config, summary, seed_mean_images(inputs.per_image), inputs.leakage_per_image,
                              json.loads(inputs.split.read_text()), json.loads(inputs.leakage_split.read_text()))


def _section(html: str, anchor: str) -> str:
    """One section of the report, its whitespace collapsed (the template wraps its sentences)."""
    return re.sub(r"\s+", " ", re.search(rf'<h2 id="{anchor}">.*?(?=<h2 )', html, re.S).group(0))


SEED_SD = statistics.stdev(SEED_OFFSETS.values())  # the fixture's spread across seeds 0, 1, 2


def test_tables_1_and_2_show_mean_and_spread_across_seeds(tmp_path, default_config):
    config = report_config(default_config)
    config["train"]["seeds"] = [0, 1, 2]
    inputs = build_results(tmp_path, config)
    summary = read_summary(inputs.summary)
    rows = table2_rows(summary, seed_mean_images(inputs.per_image), config)
    ours = next(r for r in rows if r["method"] == "Ours" and r["scale"] == 2)
    seed0 = pd.read_csv(next(p for p in inputs.per_image if p.parent.name == "seed0" and p.stem == "proposed_multi_x2"))
    assert ours["psnr"] == pytest.approx(seed0["psnr"].mean() + sum(SEED_OFFSETS.values()) / 3)
    assert ours["psnr_seed_sd"] == pytest.approx(SEED_SD) and ours["n_seeds"] == 3
    bicubic = next(r for r in rows if r["method"] == "Bicubic" and r["scale"] == 2)
    assert bicubic["n_seeds"] is None and bicubic["psnr_seed_sd"] is None
    assert ours["ci"][0] == pytest.approx(ours["gain"])  # paired on the slices' means over seeds: centred on the gain
    html = render(config, inputs, curves={})
    table2 = re.search(r'<table id="table2-data".*?</table>', html, re.S).group(0)
    line = next(l for l in re.findall(r'<tr><td class="l">Ours<.*?</tr>', table2, re.S))
    assert f"{ours['psnr']:.2f} &plusmn; {SEED_SD:.2f}" in line and "<td>3</td>" in line
    assert "the mean over its training seeds" in html and "One training seed" not in html
    table1 = [r for r in table1_rows(summary, config) if r["strategy"] == "Multi-resolution upsampling"][0]
    assert table1["psnr_seed_sd"] == pytest.approx(SEED_SD) and table1["n_seeds"] == 3
    # One seed: no spread, and the captions say so.
    config["train"]["seeds"] = [0]
    html = render(config, build_results(tmp_path / "one", config), curves={})
    table2 = re.search(r'<table id="table2-data".*?</table>', html, re.S).group(0)
    assert "&plusmn;" not in table2 and _section(html, "table1").count("One training seed per network") == 1
    assert _section(html, "table2").count("One training seed per network") == 1


def test_the_leakage_section_compares_the_gains_on_both_splits(tmp_path, default_config):
    config = report_config(default_config)  # leakage: proposed_multi_x2, one seed
    inputs = build_results(tmp_path / "one", config)
    out = _leakage(config, inputs)
    series, patient = out["rows"]
    summary = read_summary(inputs.summary).set_index(["method", "strategy", "scale"])
    assert series["gain"] == pytest.approx(summary.loc[("proposed", "multi", 2), "psnr"]
                                           - summary.loc[("bicubic", "", 2), "psnr"])
    by_patient = {p.stem: pd.read_csv(p) for p in inputs.leakage_per_image}
    assert patient["bicubic_psnr"] == pytest.approx(by_patient["bicubic_x2"]["psnr"].mean())
    assert patient["gain"] == pytest.approx(GAINS["proposed_multi"] - LEAKAGE_LOSS)  # the fixture's construction
    assert out["difference"] == pytest.approx(series["gain"] - patient["gain"])
    assert out["se"] is None and out["beyond_seeds"] is None  # one seed: no spread to compare with
    assert (series["test_patients_in_train"], patient["test_patients_in_train"]) == (1, 0)
    html = render(config, inputs, curves={})
    section = _section(html, "leakage")
    table = re.search(r'<table id="leakage-data".*?</table>', section, re.S).group(0)
    assert [m.group(1) for m in re.finditer(r'<tr><td class="l">(\w+)', table)] == ["series", "patient"]
    assert f"{series['gain']:+.2f} dB over bicubic; split by patient, {patient['gain']:+.2f} dB" in section
    assert f"credits it with {out['difference']:.2f} dB more" in section and "with one training seed" in section

    config["train"]["seeds"] = [0, 1, 2]
    inputs = build_results(tmp_path / "three", config)
    out = _leakage(config, inputs)
    assert [r["n_seeds"] for r in out["rows"]] == [3, 3]
    assert [r["psnr_seed_sd"] for r in out["rows"]] == pytest.approx([SEED_SD, SEED_SD])
    assert out["se"] == pytest.approx(math.sqrt(2 * SEED_SD**2 / 3))
    assert out["difference"] > 2 * out["se"] and out["beyond_seeds"] is True
    section = _section(render(config, inputs, curves={}), "leakage")
    assert "more than twice its standard error" in section and "split by patient is the figure to expect" in section

    config["leakage"] = None
    assert "No split-leakage check" in _section(render(config, build_results(tmp_path / "off", config), curves={}), "leakage")


def test_the_report_prints_each_methods_training_recipe(full, tmp_path):
    """The recipe table comes from the weights' sidecars the rule passes (one row per method)."""
    import dataclasses

    from report_fixtures import sidecar

    config, inputs, *_ = full
    sidecars = []
    for meta in (sidecar("srcnn", 2, source="Dong et al. 2016"), sidecar("srcnn", 3, source="Dong et al. 2016"),
                 {**sidecar("espcn", 2), "final_val_psnr": 35.0}):
        path = tmp_path / f"{meta['model']}_x{meta['scale']}.json"
        path.write_text(json.dumps(meta))
        sidecars.append(path)
    html = render(config, dataclasses.replace(inputs, sidecars=sidecars))
    table = re.search(r'<table id="recipes-data">(.*?)</table>', html, re.S).group(1)
    assert table.count("<tr>") == 3  # header, srcnn, espcn
    assert "Dong et al. 2016" in table and "x2: 17.00 / 36.50 / 36.00" in table and "x3:" in table
    assert table.split("espcn")[1].count("below bicubic") == 1  # its validation PSNR ended under bicubic's
    assert "No training recipes recorded" in render(config, dataclasses.replace(inputs, sidecars=[]))


def _row(html: str, table: str, method: str, scale_header: str) -> str:
    """The row of ``method`` in the group of Table 2 headed ``scale_header`` (e.g. "x2:")."""
    body = re.search(rf'<table id="{table}".*?</table>', html, re.S).group(0)
    group = body.split(f'<tr class="group"><th colspan="12">{scale_header}')[1].split('<tr class="group">')[0]
    return next(line for line in re.findall(r'<tr><td class="l">.*?</tr>', group, re.S)
                if line.startswith(f'<tr><td class="l">{method}<'))


def test_a_gain_whose_interval_includes_zero_is_not_significant_and_ssim_below_bicubic_is_tagged(full, tmp_path):
    """SRCNN x2 made to gain +0.05 dB with slices scattered around bicubic's (the interval includes 0)
    and with an SSIM below bicubic's: grey and "n.s.", not green; tagged "SSIM below bicubic"."""
    import dataclasses

    from mrsr.evaluate import summarize

    config, inputs, *_ = full
    frames = {p: pd.read_csv(p, keep_default_na=False) for p in inputs.per_image}
    bicubic = next(f for p, f in frames.items() if p.name == "bicubic_x2.csv")
    per_image = []
    for path, frame in frames.items():
        if path.name == "srcnn_x2.csv":
            frame = frame.copy()
            frame["psnr"] = bicubic["psnr"].to_numpy() + 0.05 + 0.4 * (-1) ** np.arange(len(frame))
            frame["ssim"] = bicubic["ssim"].to_numpy() - 0.01
        target = tmp_path / path.relative_to(inputs.summary.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(target, index=False)
        per_image.append(target)
    summary = tmp_path / "summary.csv"
    summarize(per_image).to_csv(summary, index=False)
    html = render(config, dataclasses.replace(inputs, per_image=per_image, summary=summary))
    srcnn, ours = _row(html, "table2-data", "SRCNN", "x2:"), _row(html, "table2-data", "Ours", "x2:")
    gain = re.findall(r"<td class=\"(\w+)\"[^>]*>([+-]\d\.\d\d \[[^<]*)</td>", srcnn)
    assert len(gain) == 1 and gain[0][0] == "ns" and gain[0][1].endswith(" n.s."), srcnn
    low, high = map(float, re.search(r"\[([+-][\d.]+), ([+-][\d.]+)\]", gain[0][1]).groups())
    assert low <= 0 <= high
    assert 'class="pos"' in ours and "n.s." not in ours  # a gain whose interval excludes 0 stays green
    assert 'class="flag">SSIM below bicubic</span> <span class="num">-0.0100' in srcnn
    assert 'class="flag">below bicubic<' not in srcnn  # its PSNR is above bicubic's
    summary = pd.read_csv(summary, keep_default_na=False, dtype={"strategy": str})
    rows = table2_rows(summary, seed_mean_images(per_image), config)
    bicubic_ssim = {r["scale"]: r["ssim"] for r in rows if r["method"] == "Bicubic"}
    for r in rows:
        if r["method"] != "Bicubic":
            assert (r["ssim_note"] is not None) == (r["ssim"] <= bicubic_ssim[r["scale"]]), r["method"]


def test_table3_names_its_columns_for_every_method(full):
    html = full[-1]
    header = re.search(r'<table id="table3-data">.*?</tr>', html, re.S).group(0)
    assert "Ours," not in header and "Ours /" not in header
    assert "<th>Measured here, native (256x256)</th>" in header and "<th>Measured / paper</th>" in header


def test_the_report_lists_the_series_and_patients_of_each_side(full):
    from report_fixtures import SPLIT_SERIES

    config, inputs, *_, html = full
    table = re.search(r'<table id="split-data">(.*?)</table>', html, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr><td.*?</tr>", table, re.S)]
    assert [(r[0], r[1], r[2]) for r in rows] == SPLIT_SERIES  # train, test, unused; by patient within each
    from mrsr.data.patches import validation_slice_ids
    from mrsr.data.split import read_split
    from mrsr.data.store import read_index

    held_out = validation_slice_ids(read_index(inputs.index.parent), read_split(inputs.split_csv),
                                    config["train"]["val_slices"], config["split"]["seed"])  # as the patches job does
    validation = [int(r[5]) for r in rows if r[0] == "train"]
    assert validation == [sum(i.startswith(r[3] + ":") for i in held_out) for r in rows if r[0] == "train"]
    assert sum(validation) == config["train"]["val_slices"] and len(set(validation)) > 1
    assert all(r[5] == "-" for r in rows if r[0] != "train")
    assert all(r[3] == f"{r[1]}_{r[2]}_0123abcd" for r in rows)
