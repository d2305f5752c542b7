"""The GPU fast path on the CPU: every paper job compiles like eager, ``mrsr train`` runs in each
``train.compile`` mode, ``auto`` resolves per device, and device errors are one line.

CUDA-only modes (CUDA graphs, bf16 on tensor cores) run here only when a GPU is present; elsewhere
they are skipped with the reason, and ``benchmarks/gpu_check.sh`` exercises them on a GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mrsr.cli import main
from mrsr.config import Job, load_config, model_options, training_jobs
from mrsr.data.resize import torch_upscale, upscale
from mrsr.fastpath import GPU_SYNC_INTERVAL, DeviceError, FastPath, pick_device
from mrsr.flops import mfu
from mrsr.models import GPU_SLOTS_PER_CARD, MODEL_REGISTRY, build_model, gpu_slots
from mrsr.train import HISTORY_COLUMNS, make_train_step, train
from mrsr.weights import save_weights

ROOT = Path(__file__).resolve().parents[1]
PAPER = load_config(ROOT / "config" / "paper.yaml")
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CUDA graphs, bf16 tensor cores); "
                                "benchmarks/gpu_check.sh runs this on a GPU machine")


def two_steps(job: Job, compile_mode: str | None, backend: str, device: torch.device = torch.device("cpu"),
              bf16: bool = False, steps: int = 2) -> list[tuple[float, float]]:
    """(loss, grad norm) of ``steps`` SGD steps of ``job`` at the paper's model and patch size, batch 2."""
    torch._dynamo.reset()  # one compiled function per job (Dynamo's recompile limit is per function)
    torch.manual_seed(0)
    model = build_model(job.model, job.scale, job.strategy, **model_options(PAPER, job.model)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    fast = FastPath(bf16, False, compile_mode)
    step = make_train_step(model, optimizer, fast, device, loss_reduction="mean", backend=backend, fullgraph=True)
    m = PAPER["patches"][f"x{job.scale}"]["lr_size"]
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.rand(2, 1, m, m, generator=gen), torch.rand(2, 1, (m - 1) * job.scale + 1,
                                                                  (m - 1) * job.scale + 1, generator=gen))
               for _ in range(steps)]
    kept = [step(lr.to(device), hr.to(device), 0.4) for lr, hr in batches]  # kept across steps, as in train
    return [(float(loss), float(norm)) for loss, norm in kept]


@pytest.fixture()
def one_thread():
    """One torch thread: these small steps gain nothing from more, and the CI machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("job", training_jobs(PAPER), ids=lambda job: job.name)
def test_every_paper_job_compiles_without_graph_breaks_and_matches_eager(job, one_thread):
    """Dynamo traces each job's whole training step (fullgraph: a graph break or an untraceable call,
    such as NumPy inside the bicubic input of SRCNN and FSCWN, is an error); AOTAutograd derives the
    backward. Losses and gradient norms equal the eager step's."""
    eager = two_steps(job, None, "aot_eager")
    compiled = two_steps(job, "default", "aot_eager")
    np.testing.assert_allclose(compiled, eager, rtol=1e-5)


def test_bicubic_forward_compiles_to_a_constant_matrix():
    """The resize matrices reach a compiled graph as constants, and matrices first made under
    inference mode (validation, upscale) still serve a later training step's backward."""
    lr = torch.rand(2, 1, 14, 14)
    with torch.inference_mode():
        torch_upscale(torch.rand(1, 1, 14, 14), 2)
    x = lr.clone().requires_grad_(True)
    torch_upscale(x, 2).sum().backward()  # would fail on an inference tensor saved for backward
    assert x.grad is not None
    torch._dynamo.reset()
    compiled = torch.compile(build_model("bicubic", 2), backend="eager", fullgraph=True)
    np.testing.assert_allclose(compiled(lr).numpy(), upscale(lr.numpy(), 2), atol=1e-5)


# --- mrsr train, the real loop, in each compile mode ----------------------------------------------

@pytest.fixture()
def patches(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "x2.npz"
    np.savez(path, lr=rng.random((64, 1, 14, 14), dtype=np.float32), hr=rng.random((64, 1, 27, 27), dtype=np.float32),
             val_lr_0=rng.random((16, 16), dtype=np.float32), val_hr_0=rng.random((32, 32), dtype=np.float32))
    return path


def small_config(tmp_path: Path, name: str, **train_settings) -> Path:
    """The paper profile, whole, with a small SRCNN (bicubic input: the graph that once failed to compile) and a
    budget of two epochs of three steps."""
    config = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    config["experiments"] = [{"model": "srcnn", "scales": [2]}]
    config["leakage"] = None  # its job (proposed_multi_x2) is not trained here
    config["model"]["srcnn"] = {"features": [8, 4]}
    config["train"].update(epochs=2, steps_per_epoch=3, batch_size=8, val_slices=1, threads=1,
                           checkpoint_every_s=0, **train_settings)
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run_train(tmp_path: Path, patches: Path, mode: str, device: str, **train_settings) -> list[dict]:
    config = small_config(tmp_path, f"{mode}_{device}", compile=mode, device=device, **train_settings)
    out = tmp_path / f"{mode}_{device}" / "srcnn_x2.safetensors"
    assert main(["train", "--job", "srcnn_x2", "--patches", str(patches), "--config", str(config),
                 "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["fast_path"]["compile_mode"] == {"off": None, "on": "default", "cudagraphs": "reduce-overhead"}[mode]
    timing = meta["timing"]
    assert timing["first_step_s"] > 0 and timing["steps_s"] <= timing["epochs_s"]
    assert timing["flops_per_sample"] > 0 and (device != "cpu" or timing["mfu"] is None)  # no CPU datasheet
    history = pd.read_csv(out.with_name("srcnn_x2.history.csv"))
    assert list(history.columns) == HISTORY_COLUMNS
    assert (history["checkpoint_s"] > 0).tolist() == [True, False]  # every epoch but the last (then weights)
    return history.to_dict("records")


@pytest.mark.parametrize("mode,device", [
    ("off", "cpu"),
    pytest.param("on", "cpu", marks=pytest.mark.slow),  # a real Inductor compilation (C++ on the CPU)
    # Inductor skips CUDA graphs on a CPU; the loop's handling of them still runs
    pytest.param("cudagraphs", "cpu", marks=pytest.mark.slow),
    pytest.param("off", "cuda", marks=needs_cuda),
    pytest.param("on", "cuda", marks=needs_cuda),
    pytest.param("cudagraphs", "cuda", marks=needs_cuda),
])
def test_mrsr_train_runs_in_each_compile_mode(tmp_path, patches, mode, device):
    """The whole loop: deferred loss reads keep losses across steps (CUDA graphs overwrite their
    outputs at the next replay), validation, checkpoints, weights. Same batches, same losses as eager
    (bf16 autocast off, so the comparison is tight)."""
    history = run_train(tmp_path, patches, mode, device, amp="off")
    assert all(np.isfinite(row["loss"]) for row in history)
    if mode != "off":
        eager = run_train(tmp_path / "eager", patches, "off", device, amp="off")
        # The GPU's convolutions may use TF32 and other algorithms once fused: a looser match there.
        rtol = 1e-4 if device == "cpu" else 2e-3
        np.testing.assert_allclose([r["loss"] for r in history], [r["loss"] for r in eager], rtol=rtol)


@needs_cuda
def test_cuda_graph_losses_survive_later_replays():
    """Losses kept from earlier steps still hold their values after later CUDA-graph replays."""
    job = Job("proposed", "multi", 2)
    eager = two_steps(job, None, "inductor", torch.device("cuda"), steps=4)
    graphs = two_steps(job, "reduce-overhead", "inductor", torch.device("cuda"), steps=4)
    np.testing.assert_allclose(graphs, eager, rtol=1e-3)


def test_checkpoints_follow_the_interval(tmp_path, patches, tiny_config, monkeypatch):
    """checkpoint_every_s: 0 checkpoints every epoch but the last; a long interval none at all."""
    calls = []
    monkeypatch.setattr("mrsr.train.save_checkpoint", lambda *args: calls.append(args[4]))
    tiny_config["train"].update(epochs=3, steps_per_epoch=1, checkpoint_every_s=0)
    train(Job("proposed", "multi", 2), patches, tmp_path / "a.safetensors", tiny_config)
    assert calls == [1, 2]
    calls.clear()
    tiny_config["train"]["checkpoint_every_s"] = 3600
    train(Job("proposed", "multi", 2), patches, tmp_path / "b.safetensors", tiny_config)
    assert calls == []


# --- what auto means, per device ------------------------------------------------------------------

def test_auto_resolves_per_device(train_config, monkeypatch):
    auto = {"amp": "auto", "channels_last": "auto", "compile": "auto"}
    cpu = FastPath.resolve(train_config(**auto), torch.device("cpu"))
    assert (cpu.bf16, cpu.channels_last, cpu.compile_mode, cpu.fused_optimizer, cpu.cudnn_benchmark,
            cpu.sync_every) == (False, False, None, False, False, 1)
    # CPU, heavy nets: channels_last always, bf16 only with bfloat16 instructions, no compile
    for has_bf16 in (True, False):
        monkeypatch.setattr("mrsr.fastpath.cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        heavy = FastPath.resolve(train_config(**auto), torch.device("cpu"), heavy=True)
        assert (heavy.bf16, heavy.channels_last, heavy.compile_mode) == (has_bf16, True, None)
        light = FastPath.resolve(train_config(**auto), torch.device("cpu"), heavy=False)
        assert (light.bf16, light.channels_last) == (False, False)
        off = FastPath.resolve(train_config(amp="off", channels_last="off"), torch.device("cpu"), heavy=True)
        assert (off.bf16, off.channels_last) == (False, False)
    cuda = FastPath.resolve(train_config(deterministic=False, **auto), torch.device("cuda"))
    assert (cuda.bf16, cuda.channels_last, cuda.compile_mode, cuda.cudnn_benchmark, cuda.sync_every) == \
        (True, True, "reduce-overhead", True, GPU_SYNC_INTERVAL)
    assert cuda.cuda_graphs and cuda.fused_optimizer == ("fused" in torch.optim.SGD.__init__.__code__.co_varnames)
    assert not FastPath.resolve(train_config(deterministic=True, **auto), torch.device("cuda")).cudnn_benchmark
    explicit = FastPath.resolve(train_config(amp="off", channels_last="off", compile="on"), torch.device("cuda"))
    assert (explicit.bf16, explicit.channels_last, explicit.compile_mode) == (False, False, "default")
    assert FastPath.resolve(train_config(compile="cudagraphs"), torch.device("cpu")).compile_mode == "reduce-overhead"


def test_mfu_formula():
    # The H100 figure of mrsr.fastpath's docstring: 40,323 samples/s x 3,232 MFLOP over 989.4 TFLOP/s = 13.2%.
    assert mfu(40_323, 3.232e9, 989.4) == pytest.approx(0.1317, abs=1e-4)


# --- devices: one-line errors, exit status 2 ------------------------------------------------------

def test_cuda_without_cuda_is_a_one_line_error(tmp_path, monkeypatch, capsys, patches):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        pick_device("cuda")
    weights = tmp_path / "proposed_multi_x2.safetensors"
    options = {"features": 8, "units": 2}
    save_weights(weights, build_model("proposed", 2, "multi", **options),
                 {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
    volume = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), dtype=np.int16), np.eye(4)), volume)
    capsys.readouterr()
    assert main(["upscale", "--model", str(weights), "--device", "cuda", "--out", str(tmp_path / "out"),
                 str(volume)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device") and "CUDA is not available" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    config = small_config(tmp_path, "cuda", device="cuda")
    assert main(["train", "--job", "srcnn_x2", "--patches", str(patches), "--config", str(config),
                 "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # mrsr's error boundary: one line on stderr
    assert len(err) == 1 and err[0].startswith("error:") and "CUDA is not available" in err[0]


@needs_cuda
def test_upscale_on_cuda_matches_the_cpu(tmp_path):
    options = {"features": 8, "units": 2}
    weights = tmp_path / "proposed_multi_x2.safetensors"
    save_weights(weights, build_model("proposed", 2, "multi", **options),
                 {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
    volume = tmp_path / "scan.nii.gz"
    data = (np.random.default_rng(0).random((40, 36, 2)) * 1000).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), volume)
    for device in ("cpu", "cuda"):
        assert main(["upscale", "--model", str(weights), "--device", device, "--out", str(tmp_path / device),
                     str(volume)]) == 0
    cpu, cuda = (nib.load(tmp_path / d / "scan_x2.nii.gz").get_fdata() for d in ("cpu", "cuda"))
    assert np.abs(cpu - cuda).max() <= 2  # integer output; TF32 convolutions on the GPU


# --- GPU sharing: the per-model weight of rule train's gpu_slots ----------------------------------

def test_gpu_slots_weigh_models_by_cost():
    heavy = {"proposed", "decnn", "fscwn"}
    for name in MODEL_REGISTRY:
        assert 1 <= gpu_slots(name) <= GPU_SLOTS_PER_CARD
    assert min(gpu_slots(m) for m in heavy) > max(gpu_slots(m) for m in MODEL_REGISTRY if m not in heavy)
    assert Job("proposed", "multi", 2).gpu_slots == gpu_slots("proposed")
    assert all(Job(m, None, 2).heavy == (m in heavy) for m in MODEL_REGISTRY)  # what train and bench pass FastPath
    # One card holds two heavy training jobs at once, or eight light ones.
    assert 2 * gpu_slots("proposed") <= GPU_SLOTS_PER_CARD < 3 * gpu_slots("proposed")
    assert GPU_SLOTS_PER_CARD // gpu_slots("espcn") == 8
    with pytest.raises(KeyError, match="unknown model"):
        gpu_slots("vdsr")
