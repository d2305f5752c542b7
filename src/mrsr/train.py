"""``mrsr train``: train one (model, scale, strategy) on its scale's patches.

One readable loop (nanoGPT style). The paper's protocol: He init, SGD momentum 0.9, weight decay
1e-4, batch 128, 100 epochs, lr 0.1 divided by 10 every 20 epochs, adjustable gradient clipping
(VDSR: the gradient norm is clipped to theta / lr). Every knob is a config key (``train.*``).

- Batches are drawn by indexing tensors that live on the training device (no per-sample Python).
- The epoch's patch order comes from a generator seeded with (seed, epoch), so a resumed run sees
  exactly the batches an uninterrupted one would.
- A checkpoint (weights, optimiser state, history) is written atomically after every epoch; a
  restarted job resumes from it. A NaN or Inf loss stops the job naming epoch and step, and leaves
  the last good checkpoint in place.
- Outputs: ``WEIGHTS.safetensors`` + ``WEIGHTS.json`` sidecar, and a history CSV (epoch, loss, lr,
  grad_norm, val_psnr, seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from mrsr.config import Job, border_pixels, load_config, model_options
from mrsr.io import atomic_path, write_csv, write_json
from mrsr.metrics import crop_border, psnr
from mrsr.models import SuperResolver, build_model
from mrsr.weights import git_revision, save_weights


HISTORY_COLUMNS = ["epoch", "loss", "lr", "grad_norm", "val_psnr", "seconds"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or Inf; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """The ``train`` section of the config (defaults: the paper's protocol)."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 100
    steps_per_epoch: int | None = None
    lr_step_epochs: int = 20
    lr_gamma: float = 0.1
    clip_theta: float | None = 0.4
    clip_adjustable: bool = True
    val_slices: int = 0
    seed: int = 0
    deterministic: bool = True
    device: str = "auto"
    threads: int = 0

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**section)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def loss_fn(model: SuperResolver, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Sum over the model's loss outputs of 1/2 MSE to the HR patch (eqs. 5-7).

    Outputs are n x the LR patch; the paper's HR patch is (m - 1) n + 1, the top-left part.
    """
    p = hr.shape[-1]
    return sum(0.5 * torch.mean((out[..., :p, :p] - hr) ** 2) for out in model.loss_outputs(lr))


@torch.inference_mode()
def validation_psnr(model: SuperResolver, pairs: list[tuple[np.ndarray, np.ndarray]], border: int, device: torch.device) -> float:
    """Mean PSNR over whole held-out slices, with the evaluation's crop and clipping."""
    if not pairs:
        return float("nan")
    model.eval()
    values = []
    for lr, hr in pairs:
        sr = model(torch.from_numpy(lr)[None, None].to(device))[0, 0].float().cpu().numpy()
        values.append(psnr(crop_border(hr, border), crop_border(np.clip(sr, 0, 1), border)))
    model.train()
    return float(np.mean(values))


# --- checkpoints: safetensors for every tensor, JSON for the rest (never a pickle) -------------

def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, history: list[dict]) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"epoch": epoch, "history": history, "optim_scalars": scalars,
            "param_groups": opt_state["param_groups"], "scheduler": scheduler.state_dict()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp))
    write_json(path.with_suffix(".json"), meta)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device) -> tuple[int, list[dict]]:
    """Restore a checkpoint; returns (epochs done, history)."""
    meta = json.loads(path.with_suffix(".json").read_text())
    tensors = load_file(str(path), device=str(device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optim_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return int(meta["epoch"]), list(meta["history"])


def train(job: Job, patches: Path, weights_out: Path, config: dict[str, Any], checkpoint: Path | None = None,
          stop_after_epoch: int | None = None) -> list[dict]:
    """Train ``job`` and write its weights; returns the history (one dict per epoch).

    Args:
        job: the (model, strategy, scale) to train.
        patches: the scale's patches npz (``mrsr patches``).
        weights_out: ``.safetensors`` path for the final weights.
        config: the validated workflow config.
        checkpoint: checkpoint path (default: beside the weights, ``.ckpt.safetensors``).
        stop_after_epoch: stop (as if killed) after this epoch; for tests of resuming.
    """
    cfg = TrainConfig.from_config(config["train"])
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    options = model_options(config, job.model)
    model = build_model(job.model, job.scale, job.strategy, **options).to(device)
    checkpoint = checkpoint or weights_out.with_name(weights_out.stem + ".ckpt.safetensors")

    data = np.load(patches)
    lr_all = torch.from_numpy(data["lr"]).to(device)
    hr_all = torch.from_numpy(data["hr"]).to(device)
    val_pairs = [(data[f"val_lr_{i}"], data[f"val_hr_{i}"]) for i in range(sum(k.startswith("val_lr_") for k in data.files))]
    n = len(lr_all)
    if n == 0:
        raise ValueError(f"{patches}: no training patches")
    steps = cfg.steps_per_epoch or math.ceil(n / cfg.batch_size)
    border = border_pixels(config, job.scale)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_epochs, gamma=cfg.lr_gamma)
    start, history = 0, []
    if checkpoint.exists() and checkpoint.with_suffix(".json").exists():
        start, history = load_checkpoint(checkpoint, model, optimizer, scheduler, device)
        print(f"{job.name}: resuming after epoch {start} from {checkpoint}")

    model.train()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # Enough permutations to cover `steps` batches; each batch is a slice of indices on device.
        reps = math.ceil(steps * cfg.batch_size / n)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)]).to(device)
        lr_now = optimizer.param_groups[0]["lr"]
        clip = None if cfg.clip_theta is None else (cfg.clip_theta / lr_now if cfg.clip_adjustable else cfg.clip_theta)
        losses, norms = [], []
        bar = tqdm(range(steps), desc=f"{job.name} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not os.isatty(2))
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            loss = loss_fn(model, lr_all[idx], hr_all[idx])
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"{job.name}: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                    f"the last good checkpoint ({checkpoint}) is kept. Lower train.lr or set train.clip_theta."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None and model.trainable:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            else:
                norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
            optimizer.step()
            losses.append(loss.item())
            norms.append(float(norm))
            bar.set_postfix(loss=f"{losses[-1]:.2e}")
        scheduler.step()
        history.append({
            "epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr_now, "grad_norm": float(np.mean(norms)),
            "val_psnr": validation_psnr(model, val_pairs, border, device), "seconds": time.perf_counter() - t0,
        })
        print(json.dumps(history[-1]))
        save_checkpoint(checkpoint, model, optimizer, scheduler, epoch + 1, history)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            return history

    meta = {
        "model": job.model, "scale": job.scale, "strategy": job.strategy, "options": options,
        "train": asdict(cfg), "config": config, "git_revision": git_revision(),
        "patches": {"file": str(patches), "count": n}, "device": str(device),
        "final_val_psnr": history[-1]["val_psnr"] if history else None,
        "torch": torch.__version__,
    }
    save_weights(weights_out, model, meta)
    write_csv(weights_out.with_name(weights_out.stem + ".history.csv"), pd.DataFrame(history, columns=HISTORY_COLUMNS))
    for leftover in (checkpoint, checkpoint.with_suffix(".json")):
        leftover.unlink(missing_ok=True)
    return history


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", required=True, help="e.g. proposed_multi_x2 or srcnn_x3")
    parser.add_argument("--patches", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="weights .safetensors to write")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (overrides train.threads)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.threads:
        config["train"]["threads"] = args.threads
    try:
        train(Job.from_name(args.job), args.patches, args.out, config)
    except NonFiniteLossError as exc:
        print(f"error: {exc}")
        return 3
    return 0
