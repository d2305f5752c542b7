"""CPU timing (Table 3): the benchmark command, roofline, FLOP counting, the folded and bf16 inference
paths, the timing table and its place in the report. Fast: tiny models, tiny images."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from mrsr import cli, flops, inference, machine
from mrsr.models import build_model
from mrsr.report import render
from mrsr.report.table3 import bf16_rows, table3_rows
from mrsr.timing import bf16_psnr, fit, measure, phantom, slices_by_size, time_method
from report_fixtures import build_results, report_config, timing_frame

BENCHMARK_KEYS = {"model", "scale", "size", "threads", "ms_per_slice", "gflops", "roofline_gflops", "roofline_ratio",
                  "dtype", "cpu", "ms_min", "ms_max", "ms_q25", "ms_q75", "gflop_per_slice", "runs", "warmup"}


def tiny_proposed(scale: int = 2, strategy: str = "multi") -> nn.Module:
    torch.manual_seed(0)
    return build_model("proposed", scale, strategy, features=8, units=3, image_deconv_init="bicubic")


def test_benchmark_json_has_every_key_with_sane_values(tmp_path, tiny_config, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    code = cli.main(["benchmark", "--model", "proposed", "--scale", "2", "--size", "48", "--runs", "3", "--warmup", "1",
                     "--threads", "1", "--config", str(config), "--roofline-n", "256", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert BENCHMARK_KEYS <= set(out)
    assert (out["model"], out["scale"], out["size"], out["threads"], out["lr_size"]) == ("proposed", 2, 48, 1, "24x24")
    assert out["ms_min"] <= out["ms_per_slice"] <= out["ms_max"] and out["ms_per_slice"] > 0
    assert out["gflops"] == pytest.approx(out["gflop_per_slice"] / (out["ms_per_slice"] / 1e3))
    assert out["roofline_ratio"] == pytest.approx(out["gflops"] / out["roofline_gflops"])
    assert out["roofline_gflops"] > 0.1 and out["cpu"]
    assert out["roofline_gflops"] == max(out["roofline_before"]["roofline_gflops"], out["roofline_after"]["roofline_gflops"])
    assert out["roofline_before"]["roofline_n"] == 256 and out["other_load_cores"] >= 0


@pytest.mark.parametrize("model, scale", [("bicubic", 3), ("fscwn", 2), ("espcn", 4)])
def test_benchmark_runs_for_other_models(model, scale, capsys):
    assert cli.main(["benchmark", "--model", model, "--scale", str(scale), "--size", "24", "--runs", "1",
                     "--roofline-n", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == model and out["gflop_per_slice"] > 0 and math.isfinite(out["ms_per_slice"])


def test_benchmark_refuses_a_scale_the_model_lacks(capsys):
    assert cli.main(["benchmark", "--model", "fscwn", "--scale", "3", "--size", "24", "--runs", "1"]) == 2
    assert "--scale 3: model 'fscwn' supports scales 2, not 3" in capsys.readouterr().err


def test_roofline_is_measured():
    roof = machine.matmul_roofline(n=256, runs=3)
    assert roof["roofline_n"] == 256
    assert 0.1 < roof["roofline_gflops"] <= roof["roofline_best_gflops"] < 1e5


def test_flop_count_of_a_small_conv_net_by_hand():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 5, padding=2))
    # 2 FLOPs per multiply-add: per output pixel 1*4*3*3 and 4*2*5*5 multiply-adds, 10 x 12 pixels.
    assert flops.count_flops(net, torch.rand(1, 1, 10, 12)) == 2 * (1 * 4 * 9 + 4 * 2 * 25) * 10 * 12
    deconv = nn.ConvTranspose2d(4, 1, 9, stride=2, padding=4, output_padding=1)
    # A transposed convolution: every input pixel scatters 4 x 1 x 9 x 9 multiply-adds.
    assert flops.count_flops(deconv, torch.rand(1, 4, 8, 8)) == 2 * 4 * 81 * 8 * 8


@pytest.mark.parametrize("strategy", ["multi", "single", "double"])
def test_folded_inference_equals_the_unfolded_network(strategy):
    model = tiny_proposed(strategy=strategy).eval()
    lr = torch.rand(2, 1, 11, 13)
    with torch.enable_grad():
        reference = model(lr)  # the differentiable path
        unfolded = (torch.einsum("n,nbchw->bchw", model.branch_weights, model.branches(lr))
                    if strategy == "multi" else reference)
    fast = inference.prepare(copy.deepcopy(model))
    with torch.inference_mode():
        folded = fast(lr.contiguous(memory_format=torch.channels_last))
    assert folded.shape == (2, 1, 22, 26)
    assert torch.allclose(folded, unfolded, atol=1e-5, rtol=0)
    assert torch.allclose(folded, reference, atol=1e-5, rtol=0)


def test_fused_cpu_path_follows_weight_updates_and_input_shapes():
    model = inference.prepare(tiny_proposed())
    lr = torch.rand(1, 1, 9, 10)
    with torch.no_grad():
        plain = model(lr)  # no inference mode: the unfused path
    with torch.inference_mode():
        assert torch.allclose(model(lr), plain, atol=1e-5, rtol=0)
        assert model(torch.rand(1, 1, 7, 5)).shape == (1, 1, 14, 10)  # another shape, its own packing
    with torch.no_grad():
        model.body[0].conv2.weight.mul_(2.0)  # an in-place update must invalidate the packed copy
        plain = model(lr)
    with torch.inference_mode():
        assert torch.allclose(model(lr), plain, atol=1e-5, rtol=0)


def test_bf16_path_psnr_difference_is_finite_and_small():
    model = tiny_proposed()
    hr = phantom(48)
    fp32 = inference.prepare(copy.deepcopy(model))
    bf16 = inference.prepare(copy.deepcopy(model), "bf16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    _, sr32 = measure(fp32, [hr], 2, runs=1, warmup=0)
    _, sr16 = measure(bf16, [hr], 2, runs=1, warmup=0, dtype="bf16")
    assert sr16[0].dtype == np.float32 and sr16[0].shape == (48, 48)
    out = bf16_psnr([hr], sr32, sr16, 2, border=2)
    assert all(math.isfinite(v) for v in out.values())
    assert abs(out["psnr_diff_db"]) < 0.5 and out["psnr_bf16_vs_fp32"] > 35


def test_fit_crops_the_centre_and_pads_with_background():
    image = np.arange(36, dtype=np.float32).reshape(6, 6)
    assert np.array_equal(fit(image, 2), image[2:4, 2:4])
    padded = fit(image, 8)
    assert padded.shape == (8, 8) and padded[0].sum() == 0 and np.array_equal(padded[1:7, 1:7], image)


def test_time_method_reuses_identical_sizes_and_measures_bf16(default_config):
    slices = [phantom(32, seed=i) for i in range(2)]
    tcfg = default_config["timing"] | {"runs": 2, "warmup": 0, "sizes": ["native", 32, 24], "dtypes": ["fp32", "bf16"],
                                       "bf16_jobs": ["proposed_multi_x2"], "bf16_runs": 1}
    rows = pd.DataFrame(time_method("proposed_multi_x2", tiny_proposed(), 2, slices_by_size(slices, tcfg["sizes"]),
                                    tcfg, border=2))
    assert list(zip(rows["size"], rows["dtype"])) == [(s, d) for d in ("fp32", "bf16") for s in ("native", "32", "24")]
    assert rows.set_index(["size", "dtype"]).loc[("32", "fp32"), "timed_as"] == "native"  # same shape: reused
    assert rows.set_index(["size", "dtype"]).loc[("24", "fp32"), "hr_shape"] == "24x24"
    assert (rows.loc[rows["dtype"] == "bf16", "runs"] == 1).all()
    assert rows["psnr_diff_db"].abs().max() < 0.5


def test_timing_csv_renders_table3(tmp_path, default_config):
    config = report_config(default_config)
    inputs = build_results(tmp_path, config)
    rows = table3_rows(pd.read_csv(tmp_path / "results/timing/table3.csv", keep_default_na=False, na_values=[""]))
    assert [(r["method"], r["scale"]) for r in rows] == [
        ("Bicubic", 2), ("SRCNN", 2), ("Ours", 2), ("Bicubic", 3), ("SRCNN", 3), ("Ours", 3)]
    ours = rows[2]
    assert ours["paper_s"] == 1.02 and ours["times"]["256"]["median"] == pytest.approx(0.25)
    assert ours["vs_paper"] == pytest.approx(0.25 / 1.02)
    assert [r["name"] for r in bf16_rows(timing_frame(["proposed_multi_x2"]))] == ["proposed_multi_x2"]  # 256 = native
    html = render(config, inputs)
    assert 'id="table3-data"' in html and "Test CPU" in html and 'id="bf16-data"' in html
    assert "0.25 [0.237, 0.275]" in html  # Ours x2: median [quartiles] in seconds
    assert "1.02" in html and "6.00x" not in html and "0.17x" in html  # paper's figure; bf16 slower, honestly


def test_timing_command_writes_table3_and_machine(tmp_path, tiny_config):
    from mrsr.data.store import INDEX_COLUMNS
    from mrsr.weights import save_weights

    store, key = tmp_path / "store", "P1-T1-abc"
    (store / "slices").mkdir(parents=True)
    volume = np.stack([phantom(40, seed=i) * 1000 for i in range(3)]).astype(np.float32)
    np.save(store / "slices" / f"{key}.npy", volume)
    known = {"slice_id": [f"{key}:{i:04d}" for i in range(3)], "series_key": key, "slice_index": range(3),
             "patient_id": "P1", "mean": volume.mean(axis=(1, 2))}
    pd.DataFrame({c: known.get(c, 0) for c in INDEX_COLUMNS}).to_csv(store / "index.csv", index=False)
    split = tmp_path / "split.csv"
    pd.DataFrame({"series_key": [key], "patient_id": ["P1"], "norm": [1000.0], "split": ["test"]}).to_csv(split, index=False)
    weights = tmp_path / "proposed_multi_x2.safetensors"
    options = {"features": 8, "units": 2}
    save_weights(weights, build_model("proposed", 2, "multi", **options),
                 {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
    tiny_config["timing"] = {"runs": 2, "warmup": 0, "slices": 2, "sizes": ["native", 32], "dtypes": ["fp32", "bf16"],
                             "bf16_jobs": ["proposed_multi_x2"], "bf16_runs": 1, "roofline_n": 128}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    out, machine = tmp_path / "timing/table3.csv", tmp_path / "timing/machine.json"
    assert cli.main(["timing", "--config", str(config), "--store", str(store), "--split", str(split), "--threads", "1",
                     "--out", str(out), "--machine", str(machine), str(weights)]) == 0
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert set(table["name"]) == {"bicubic_x2", "proposed_multi_x2"}
    assert list(table.loc[table["name"] == "proposed_multi_x2", "hr_shape"]) == ["40x40", "32x32"] * 2
    assert (table["threads"] == 1).all() and (table["roofline_ratio"] > 0).all()
    info = json.loads(machine.read_text())
    assert info["threads"] == 1 and info["cpu"] and len(info["test_slices"]) == 2
    assert len(table3_rows(table)) == 2 and len(bf16_rows(table)) == 2
