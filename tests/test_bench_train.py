"""``mrsr benchmark-train``: FLOP counting checked by hand, and the JSON it prints."""

from __future__ import annotations

import json

import pytest
import yaml

from mrsr.flops import flops_per_sample, peak_tflops
from mrsr.cli import main
from mrsr.config import Job


def test_flops_per_sample_by_hand():
    """ESPCN x2 on a 14 x 14 patch: 5x5 1->64, 3x3 64->32, 3x3 32->4 convolutions, 'same' padding.

    Forward: 2 FLOPs per MAC per output pixel. Backward: weight gradients cost the forward again for
    every layer; input gradients the forward again for every layer but the first (its input, the
    image, needs no gradient).
    """
    pixels = 14 * 14
    macs = [25 * 1 * 64, 9 * 64 * 32, 9 * 32 * 4]
    forward = 2 * pixels * sum(macs)
    expected = forward + forward + 2 * pixels * sum(macs[1:])
    assert flops_per_sample(Job("espcn", None, 2), {}, 14, 27) == expected


def test_cpu_peak_is_measured():
    peak, source = peak_tflops(__import__("torch").device("cpu"), bf16=False)
    assert source == "measured" and 1e-3 < peak < 100


def test_benchmark_train_json(tmp_path, tiny_config, capsys, monkeypatch):
    monkeypatch.setattr("mrsr.bench_train.cpu_has_bf16", lambda: False)  # one row per job (else fp32 + bf16)
    tiny_config["experiments"].append({"model": "srcnn", "scales": [2], "train": {"batch_size": 4}})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["benchmark-train", "--config", str(path), "--steps", "2", "--warmup", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["job"] for r in rows] == ["proposed_multi_x2", "srcnn_x2"]
    srcnn = rows[1]
    assert srcnn["batch_size"] == 4
    assert {k: srcnn["fast_path"][k] for k in ("bf16", "channels_last", "compile_mode")} == \
        {"bf16": False, "channels_last": False, "compile_mode": None}
    for row in rows:
        assert row["samples_per_s"] > 0 and row["flops_per_sample"] > 0
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / row["peak_tflops"])
        assert row["paper_100_epochs_min"] == pytest.approx(100 * row["paper_epoch_s"] / 60)
    assert rows[0]["paper_epoch_patches"] == 175_000  # x2 is the reference scale


def test_benchmark_train_reports_fp32_and_bf16_on_a_bf16_cpu(tmp_path, tiny_config, capsys, monkeypatch):
    """Issue #19: on a CPU with bfloat16 instructions and no --amp, each job is measured in fp32 and
    in bf16, each with its MFU against the matmul roofline measured in that precision."""
    monkeypatch.setattr("mrsr.bench_train.cpu_has_bf16", lambda: True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["benchmark-train", "--config", str(path), "--device", "cpu", "--steps", "1", "--warmup", "1",
                 "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["job"], r["fast_path"]["bf16"]) for r in rows] == [("proposed_multi_x2", False),
                                                                  ("proposed_multi_x2", True)]
    assert all(r["peak_source"] == "measured" and r["mfu"] > 0 for r in rows)
    assert main(["benchmark-train", "--config", str(path), "--device", "cpu", "--amp", "off", "--steps", "1",
                 "--warmup", "1", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # --amp given: that precision only


def test_benchmark_train_names_a_missing_job(tmp_path, tiny_config, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["benchmark-train", "--config", str(path), "--model", "fscwn"]) == 2
    assert "no job matching model=fscwn" in capsys.readouterr().err
