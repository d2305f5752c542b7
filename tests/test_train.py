"""Training: resume after a kill reaches the same weights; a NaN loss stops with epoch and step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mrsr.config import Job
from mrsr.train import NonFiniteLossError, train
from mrsr.weights import WeightsError, load_model


@pytest.fixture()
def patches(tmp_path):
    rng = np.random.default_rng(0)
    hr = rng.random((64, 1, 27, 27)).astype(np.float32)
    lr = hr[:, :, ::2, ::2][:, :, :14, :14].copy()
    path = tmp_path / "x2.npz"
    np.savez(path, lr=lr, hr=hr, val_lr_0=lr[0, 0], val_hr_0=np.pad(hr[0, 0], ((0, 1), (0, 1))))
    return path


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, patches, tiny_config):
    tiny_config["train"].update(epochs=3, steps_per_epoch=2)
    job = Job("proposed", "multi", 2)
    straight = tmp_path / "a" / "proposed_multi_x2.safetensors"
    train(job, patches, straight, tiny_config)
    resumed = tmp_path / "b" / "proposed_multi_x2.safetensors"
    history = train(job, patches, resumed, tiny_config, stop_after_epoch=1)  # "killed" after epoch 1
    assert len(history) == 1 and not resumed.exists()
    assert resumed.with_name("proposed_multi_x2.ckpt.safetensors").exists()
    train(job, patches, resumed, tiny_config)
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta = json.loads(resumed.with_suffix(".json").read_text())
    assert (meta["model"], meta["scale"], meta["strategy"]) == ("proposed", 2, "multi")
    assert meta["config"]["train"]["epochs"] == 3 and "git_revision" in meta
    hist = (tmp_path / "b" / "proposed_multi_x2.history.csv").read_text().splitlines()
    assert hist[0].split(",") == ["epoch", "loss", "lr", "grad_norm", "val_psnr", "seconds"] and len(hist) == 4
    model, _ = load_model(resumed)
    assert model(torch.rand(1, 1, 9, 11)).shape == (1, 1, 18, 22)
    assert not resumed.with_name("proposed_multi_x2.ckpt.safetensors").exists()


def test_nan_loss_stops_naming_epoch_and_step(tmp_path, patches, tiny_config):
    tiny_config["train"].update(optimizer="sgd", lr=1e30, clip_theta=None, epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        train(Job("proposed", "multi", 2), patches, tmp_path / "m.safetensors", tiny_config)
    assert not (tmp_path / "m.safetensors").exists()


def test_pickles_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04not really")
    with pytest.raises(WeightsError, match="pickle"):
        load_model(path)
