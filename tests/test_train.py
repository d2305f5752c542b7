"""Training: resume after a kill reaches the same weights; a NaN loss stops with epoch and step."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mrsr.config import Job, job_train_settings
from mrsr.models import build_model
from mrsr.fastpath import FastPath
from mrsr.train import HISTORY_COLUMNS, NonFiniteLossError, make_train_step, train
from mrsr.weights import WeightsError, load_model


class Killed(Exception):
    """Raised where a killed job's process would have died."""


def train_killed_after(epoch: int, monkeypatch, job: Job, patches, weights, config: dict) -> None:
    """Train until the checkpoint of ``epoch`` is written, then die there as a killed job would (no weights).

    ``checkpoint_every_s: 0`` (a setting a checkpoint may be resumed across) writes one every epoch.
    """
    import mrsr.train as module

    real = module.save_checkpoint

    def save_then_die(path, model, optimizer, scheduler, done, *args, **kwargs):
        real(path, model, optimizer, scheduler, done, *args, **kwargs)
        if done >= epoch:
            raise Killed

    config["train"]["checkpoint_every_s"] = 0
    with monkeypatch.context() as patch:
        patch.setattr(module, "save_checkpoint", save_then_die)
        with pytest.raises(Killed):
            train(job, patches, weights, config)


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, patches, tiny_config, monkeypatch):
    tiny_config["train"].update(epochs=3, steps_per_epoch=2)
    job = Job("proposed", "multi", 2)
    straight = tmp_path / "a" / "proposed_multi_x2.safetensors"
    train(job, patches, straight, tiny_config)
    resumed = tmp_path / "b" / "proposed_multi_x2.safetensors"
    train_killed_after(1, monkeypatch, job, patches, resumed, tiny_config)
    assert not resumed.exists() and resumed.with_name("proposed_multi_x2.ckpt.safetensors").exists()
    assert len(train(job, patches, resumed, tiny_config)) == 3  # the resumed run's history holds all three epochs
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta = json.loads(resumed.with_suffix(".json").read_text())
    assert (meta["model"], meta["scale"], meta["strategy"]) == ("proposed", 2, "multi")
    assert meta["config"]["train"]["epochs"] == 3 and "git_revision" in meta
    hist = (tmp_path / "b" / "proposed_multi_x2.history.csv").read_text().splitlines()
    assert hist[0].split(",") == HISTORY_COLUMNS and len(hist) == 4
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


def test_deferred_loss_check_names_the_same_step(tmp_path, patches, tiny_config, monkeypatch):
    """The GPU path reads the loss back every few steps; the error must still name the first bad step."""
    tiny_config["train"].update(optimizer="sgd", lr=1e30, clip_theta=None, epochs=1, steps_per_epoch=6)
    job = Job("proposed", "multi", 2)
    with pytest.raises(NonFiniteLossError) as every_step:
        train(job, patches, tmp_path / "a.safetensors", tiny_config)
    monkeypatch.setattr("mrsr.fastpath.sync_interval", lambda device: 4)
    with pytest.raises(NonFiniteLossError) as deferred:
        train(job, patches, tmp_path / "b.safetensors", tiny_config)
    step = lambda exc: re.search(r"step (\d+)", str(exc.value)).group(1)  # noqa: E731
    assert step(every_step) == step(deferred)
    assert int(step(every_step)) > 1  # the first step's loss is finite; the explosion comes after


def test_experiment_overrides_the_training_budget(tmp_path, patches, tiny_config):
    tiny_config["experiments"] = [
        {"model": "proposed", "strategy": "multi", "scales": [2], "train": {"epochs": 1, "steps_per_epoch": 1}},
        {"model": "srcnn", "scales": [2], "train": {"lr": 0.002}},
    ]
    assert job_train_settings(tiny_config, Job("srcnn", None, 2))["lr"] == 0.002
    assert job_train_settings(tiny_config, Job("srcnn", None, 2))["epochs"] == tiny_config["train"]["epochs"]
    history = train(Job("proposed", "multi", 2), patches, tmp_path / "p.safetensors", tiny_config)
    assert len(history) == 1
    meta = json.loads((tmp_path / "p.json").read_text())
    assert meta["train"]["steps_per_epoch"] == 1 and meta["train"]["epochs"] == 1


def test_fast_path_switches_train_on_the_cpu(tmp_path, patches, tiny_config, train_config):
    """bf16 autocast and channels_last (the GPU defaults) also run on the CPU, with finite losses."""
    auto = {"amp": "auto", "channels_last": "auto", "compile": "auto"}
    cuda = FastPath.resolve(train_config(**auto), torch.device("cuda"))  # tests/test_compile.py: every switch
    assert (cuda.bf16, cuda.channels_last, cuda.compile_mode) == (True, True, "reduce-overhead")
    cpu = FastPath.resolve(train_config(**auto), torch.device("cpu"))
    assert (cpu.bf16, cpu.channels_last, cpu.compile_mode) == (False, False, None)
    tiny_config["train"].update(epochs=1, steps_per_epoch=2, amp="bf16", channels_last="on")
    history = train(Job("proposed", "multi", 2), patches, tmp_path / "f.safetensors", tiny_config)
    assert np.isfinite(history[0]["loss"]) and history[0]["loss"] > 0
    weights = load_file(str(tmp_path / "f.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())  # autocast never changes the stored dtype


@pytest.mark.slow
def test_compiled_step_equals_eager_step():
    """torch.compile (the GPU default) gives the eager loop's loss and gradient norm (CPU inductor)."""
    torch.manual_seed(0)
    lr, hr = torch.rand(8, 1, 14, 14), torch.rand(8, 1, 27, 27)
    results = []
    for mode in (None, "default"):
        torch.manual_seed(1)
        model = build_model("proposed", 2, "multi", features=8, units=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        step = make_train_step(model, optimizer, FastPath(False, False, mode), torch.device("cpu"), loss_reduction="mean")
        results.append([tuple(float(v) for v in step(lr, hr, 0.4)) for _ in range(2)])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


# ------------------------------------------------------ checkpoints: one file, fingerprinted -----
def _ckpt(weights):
    return weights.with_name(weights.stem + ".ckpt.safetensors")


def test_checkpoint_is_one_file_with_its_fingerprint(tmp_path, patches, tiny_config, monkeypatch):
    from safetensors import safe_open

    weights = tmp_path / "proposed_multi_x2.safetensors"
    train_killed_after(1, monkeypatch, Job("proposed", "multi", 2), patches, weights, tiny_config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proposed_multi_x2.ckpt.safetensors", "x2.npz"]
    with safe_open(str(_ckpt(weights)), "pt") as f:
        meta = json.loads(f.metadata()["mrsr_checkpoint"])
    assert meta["epoch"] == 1 and meta["fingerprint"]["job"] == "proposed_multi_x2"
    assert meta["fingerprint"]["train"]["lr"] == tiny_config["train"]["lr"]
    assert meta["fingerprint"]["patches"] == {"lr": [64, 1, 14, 14], "hr": [64, 1, 27, 27]}


@pytest.mark.parametrize("change,resumes,named", [
    (lambda c: c["train"].update(lr=c["train"]["lr"] / 10), False, "train.lr"),
    (lambda c: c["train"].update(batch_size=4), False, "train.batch_size"),
    (lambda c: c["model"]["proposed"].update(features=4), False, "model_options.features"),
    (lambda c: c["train"].update(param_groups={"last": 0.5}), False, "train.param_groups"),  # a recipe change
    (lambda c: c["train"].update(init={"last": "zero"}), False, "train.init"),
    (lambda c: c["train"].update(recipe="a note"), True, None),  # the source note is not fingerprinted
    (lambda c: c["train"].update(epochs=3, threads=2), True, None),  # a longer run resumes
])
def test_checkpoint_of_other_settings_restarts_saying_why(tmp_path, patches, tiny_config, capsys, monkeypatch, change,
                                                         resumes, named):
    job = Job("proposed", "multi", 2)
    weights = tmp_path / "proposed_multi_x2.safetensors"
    train_killed_after(1, monkeypatch, job, patches, weights, tiny_config)
    change(tiny_config)
    capsys.readouterr()
    history = train(job, patches, weights, tiny_config)  # no size-mismatch traceback, no mixed run
    out = capsys.readouterr().out
    assert ("resuming after epoch 1" in out) == resumes
    if named:
        assert "written under other settings" in out and named in out and "starting from epoch 0" in out
    assert [h["epoch"] for h in history] == list(range(1, tiny_config["train"]["epochs"] + 1))
    assert not _ckpt(weights).exists()


def test_torn_checkpoint_and_killed_temporaries_are_not_trusted(tmp_path, patches, tiny_config, capsys, monkeypatch):
    import socket
    import subprocess
    import sys

    job = Job("proposed", "multi", 2)
    weights = tmp_path / "proposed_multi_x2.safetensors"
    train_killed_after(1, monkeypatch, job, patches, weights, tiny_config)
    data = _ckpt(weights).read_bytes()
    _ckpt(weights).write_bytes(data[: len(data) // 2])  # as a copy cut short would leave it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{_ckpt(weights).name}.mrsr@{socket.gethostname()}@{int(dead.stdout)}.abcd1234.safetensors.tmp"
    stale.write_bytes(b"half a checkpoint")
    history = train(job, patches, weights, tiny_config)
    assert "not a resumable checkpoint" in capsys.readouterr().out and len(history) == 2
    assert not stale.exists() and weights.exists()


# ------------------------------------------------- settings that fail late ------------
def test_infinite_gradient_norm_stops_training_like_a_nan_loss(tmp_path, patches, tiny_config):
    """lr 1e6 with adjustable clipping: the loss can stay finite while the gradient norm is Inf."""
    tiny_config["train"].update(optimizer="sgd", lr=1e6, epochs=3, steps_per_epoch=4)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm is inf at epoch 1, step \d+"):
        train(Job("proposed", "multi", 2), patches, tmp_path / "m.safetensors", tiny_config)
    assert not (tmp_path / "m.safetensors").exists()


def test_gradient_norm_alone_is_checked(tmp_path, patches, tiny_config, monkeypatch):
    """A finite loss with an Inf gradient norm stops the run, named as the gradient norm."""
    real = make_train_step

    def inf_norm_step(*args, **kwargs):
        step = real(*args, **kwargs)
        return lambda lr, hr, clip: (step(lr, hr, clip)[0], torch.tensor(float("inf")))

    monkeypatch.setattr("mrsr.train.make_train_step", inf_norm_step)
    with pytest.raises(NonFiniteLossError, match=r"gradient norm is inf at epoch 1, step 1"):
        train(Job("proposed", "multi", 2), patches, tmp_path / "m.safetensors", tiny_config)


def test_batch_larger_than_the_patch_set_names_the_key(tmp_path, patches, tiny_config):
    from mrsr.config import ConfigError

    tiny_config["train"].update(batch_size=65)
    with pytest.raises(ConfigError, match=r"'train.batch_size': 65 is larger than the 64 training patches"):
        train(Job("proposed", "multi", 2), patches, tmp_path / "m.safetensors", tiny_config)


def test_lr_size_larger_than_the_images_names_the_key(tmp_path):
    import nibabel as nib

    from mrsr.config import ConfigError
    from mrsr.data.ingest import ingest
    from mrsr.data.patches import make_patches
    from mrsr.data.split import make_split
    from mrsr.data.store import read_index

    for name in ("a", "b"):
        volume = np.random.default_rng(0).integers(1, 500, (40, 36, 3)).astype(np.int16)
        (tmp_path / "in" / name).mkdir(parents=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "in" / name / "v.nii.gz")
    ingest("local", tmp_path / "in", tmp_path / "store")
    split = make_split(read_index(tmp_path / "store"), "series", 0, 1, 1)
    assert len(make_patches(tmp_path / "store", split, 2, 14, 11, 0, 0)["lr"]) > 0
    with pytest.raises(ConfigError, match=r"'patches.x2.lr_size': 19 gives no patch: .* at most 18 x 20"):
        make_patches(tmp_path / "store", split, 2, 19, 11, 0, 0)


# ------------------------------------------------ per-model recipes --------------------------------
def test_parameter_groups_get_their_configured_rates(train_config):
    """SRCNN as published: 1e-4 for the first two layers, 1e-5 (x 0.1) for the last."""
    from mrsr.train import make_optimizer

    model = build_model("srcnn", 2)
    cfg = train_config(optimizer="sgd", lr=1e-4, momentum=0.9, weight_decay=0.0, param_groups={"last": 0.1})
    optimizer = make_optimizer(model, cfg)
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates == pytest.approx({"body": 1e-4, "last": 1e-5})
    ids = {g["name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert ids["last"] == {id(model.reconstruct.weight), id(model.reconstruct.bias)}
    assert all(g["momentum"] == 0.9 for g in optimizer.param_groups)
    # proposed/single: empty groups (no image deconvolution, no fusion weights) get no optimiser group
    single = make_optimizer(build_model("proposed", 2, "single", features=8, units=2),
                            train_config(optimizer="adam", lr=1e-3, param_groups={"upsample": 0.5, "fusion": 2.0}))
    assert [g["name"] for g in single.param_groups] == ["body", "last"]
    with pytest.raises(ValueError, match="has no group 'upsample'"):
        make_optimizer(build_model("espcn", 2), train_config(param_groups={"upsample": 0.1}))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_on_conv_weights_only(train_config, optimizer):
    """weight_decay_params: conv_weights decays kernels and leaves biases and PReLU slopes alone; with
    `all` (the default) every parameter decays. Measured on one step with zero gradients, where weight
    decay is the only thing that moves a parameter."""
    from mrsr.train import make_optimizer

    def step(scope: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = build_model("proposed", 2, "multi", features=8, units=2)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        opt = make_optimizer(model, train_config(optimizer=optimizer, lr=0.1, momentum=0.0, weight_decay=0.5,
                                                 weight_decay_params=scope, param_groups={"last": 0.1}))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
            p.data.add_(1.0)  # no parameter at exactly zero (the zero-started deconvolution)
            before[next(n for n, q in model.named_parameters() if q is p)] += 1.0
        opt.step()
        return model, before

    model, before = step("conv_weights")
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    kernels = {name for name, p in model.named_parameters() if p.ndim >= 2}
    assert moved == kernels and any(p.ndim == 1 and "prelu" in n.lower() or n.endswith("bias")
                                    for n, p in model.named_parameters() if n not in moved)
    model, before = step("all")
    assert all(not torch.equal(p.detach(), before[name]) for name, p in model.named_parameters())


def test_schedules_per_step():
    from mrsr.train import LrSchedule

    step = LrSchedule("step", steps_per_epoch=10, epochs=30, lr_step_epochs=10, lr_gamma=0.1, lr_min_ratio=0.0,
                      warmup_epochs=0)
    assert [step(s) for s in (0, 99, 100, 199, 200)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cosine = LrSchedule("cosine", steps_per_epoch=10, epochs=10, lr_step_epochs=20, lr_gamma=0.1, lr_min_ratio=0.01,
                        warmup_epochs=1)
    assert [cosine(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warm-up
    assert cosine(10) == pytest.approx(1.0) and cosine(99) == pytest.approx(0.01)
    assert cosine(10) > cosine(50) > cosine(99)


def test_sum_reduction_is_the_mean_times_the_patch_pixels():
    from mrsr.fastpath import FastPath

    torch.manual_seed(0)
    lr, hr = torch.rand(4, 1, 14, 14), torch.rand(4, 1, 27, 27)
    losses = []
    for reduction in ("mean", "sum"):
        torch.manual_seed(1)
        model = build_model("espcn", 2)
        step = make_train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), FastPath(False, False, None),
                               torch.device("cpu"), loss_reduction=reduction)
        losses.append(float(step(lr, hr, None)[0]))
    assert losses[1] == pytest.approx(losses[0] * 27 * 27, rel=1e-5)


def test_recipe_reaches_training_and_the_sidecar(tmp_path, patches, tiny_config):
    tiny_config["experiments"] = [{"model": "srcnn", "scales": [2], "train": {
        "optimizer": "sgd", "lr": 1e-4, "param_groups": {"last": 0.1}, "init": {"all": "gaussian"}, "init_std": 1e-3,
        "loss_reduction": "sum", "schedule": "cosine", "lr_min_ratio": 0.1, "warmup_epochs": 1, "epochs": 3,
        "recipe": "Dong et al. 2016"}}]
    history = train(Job("srcnn", None, 2), patches, tmp_path / "s.safetensors", tiny_config)
    assert [h["lr"] for h in history] == pytest.approx([1e-4 / 3, 1e-4, 1e-4 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 3 / 5)))])
    meta = json.loads((tmp_path / "s.json").read_text())
    recipe = meta["recipe"]
    assert recipe["optimizer"] == "sgd" and recipe["loss_reduction"] == "sum" and recipe["source"] == "Dong et al. 2016"
    assert recipe["groups"]["body"]["lr"] == pytest.approx(1e-4) and recipe["groups"]["last"]["lr"] == pytest.approx(1e-5)
    assert recipe["groups"]["last"]["parameters"] == 32 * 25 + 1
    assert recipe["init"] == {"train": {"all": "gaussian"}, "std": 1e-3, "model_options": {}}
    assert recipe["schedule"] == {"kind": "cosine", "warmup_epochs": 1, "lr_min_ratio": 0.1}
    assert (recipe["epochs"], recipe["steps_per_epoch"], recipe["batch_size"]) == (3, 3, 8)
    # where training started, beside bicubic on the same validation slices
    assert meta["initial_val_psnr"] < meta["bicubic_val_psnr"]  # Gaussian 1e-3: the output starts near zero


def test_table1_strategies_record_where_they_start(tmp_path, patches, tiny_config):
    """Quick-profile init (bicubic image path, zero feature deconvolution): multi and double start as
    bicubic; single has no image path and starts at zero. The sidecars say so."""
    tiny_config["model"]["proposed"].update(image_deconv_init="bicubic", feature_deconv_init="zero")
    tiny_config["train"].update(epochs=1, steps_per_epoch=1)
    start = {}
    for strategy in ("multi", "double", "single"):
        tiny_config["experiments"] = [{"model": "proposed", "strategy": strategy, "scales": [2]}]
        train(Job("proposed", strategy, 2), patches, tmp_path / f"{strategy}.safetensors", tiny_config)
        meta = json.loads((tmp_path / f"{strategy}.json").read_text())
        start[strategy] = meta["initial_val_psnr"] - meta["bicubic_val_psnr"]
        assert meta["recipe"]["init"]["model_options"] == {"image_deconv_init": "bicubic", "feature_deconv_init": "zero"}
    assert start["multi"] == pytest.approx(start["double"], abs=1e-3) and start["single"] < start["multi"] - 3


def test_cosine_fingerprints_the_epochs(tmp_path, patches, tiny_config, capsys, monkeypatch):
    """A step schedule may be lengthened and resumed; a cosine one may not (its curve depends on the length)."""
    tiny_config["train"].update(schedule="cosine")
    job = Job("proposed", "multi", 2)
    weights = tmp_path / "proposed_multi_x2.safetensors"
    train_killed_after(1, monkeypatch, job, patches, weights, tiny_config)
    tiny_config["train"].update(epochs=3)
    capsys.readouterr()
    train(job, patches, weights, tiny_config)
    assert "train.epochs 2 -> 3" in capsys.readouterr().out
