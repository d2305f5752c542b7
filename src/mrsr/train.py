"""``mrsr train``: train one (model, scale, strategy) on its scale's patches.

One readable loop (nanoGPT style). The paper's protocol: He init, SGD momentum 0.9, weight decay
1e-4, batch 128, 100 epochs, lr 0.1 divided by 10 every 20 epochs, adjustable gradient clipping
(VDSR: the gradient norm is clipped to theta / lr). Every knob is a config key (``train.*``), and
an experiment's ``train:`` overrides them for its jobs: that is how each baseline gets its own
recipe (docs/models.md, "Training recipes"): learning rates per named parameter group
(``param_groups``, :meth:`mrsr.models.base.SuperResolver.param_groups`), initialisation per group
(``init``), a per-step ``step`` or ``cosine`` schedule with optional warm-up, and the loss reduction
in which a published SGD rate is stated (``loss_reduction``). The weights sidecar records the
effective recipe (``recipe``) and where training started (``initial_val_psnr`` beside
``bicubic_val_psnr`` on the validation slices).

- Batches are drawn by indexing tensors that live on the training device (no per-sample Python).
- GPU fast path (``train.amp``, ``train.channels_last``, ``train.compile``), resolved per device in
  one place, :class:`mrsr.fastpath.FastPath`: on CUDA ``auto`` means bf16 autocast, channels_last,
  torch.compile with CUDA graphs and a fused optimiser; the loss is read back to the host only every
  ``sync_every`` steps (50 on a GPU, every step on the CPU, where ``auto`` is plain fp32 eager).
- The epoch's patch order comes from a generator seeded with (seed, epoch), so a resumed run sees
  exactly the batches an uninterrupted one would.
- A checkpoint (weights, optimiser state, history) is written as one file, atomically (the JSON
  part in the safetensors header), so a kill never pairs the weights of one epoch with the
  optimiser state of another. It is written at the end of an epoch once ``train.checkpoint_every_s``
  seconds (default 300; 0: every epoch) have passed since the last; a restarted job resumes from it,
  but only when it was written under the same job, model options, training settings and patch
  shapes (a fingerprint stored in it; ``epochs``, ``threads``, ``device``, ``compile`` and
  ``channels_last`` may change). Otherwise training starts again from epoch 0, saying what differs.
  A NaN or Inf loss (or gradient norm: clipping would turn it into steps that learn nothing) stops
  the job naming epoch and step, and leaves the last good checkpoint in place.
- Outputs: ``WEIGHTS.safetensors`` + ``WEIGHTS.json`` sidecar (with ``timing``: seconds by phase,
  steady samples/s, MFU), and a history CSV (epoch, loss, lr, grad_norm, val_psnr, seconds, and the
  epoch's seconds by phase: steps_s, val_s, checkpoint_s, with samples_per_s).
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
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from mrsr.config import ConfigError, Job, border_pixels, job_train_settings, load_config, model_options
from mrsr.errors import UsageError, arg_type, existing_file, output_file
from mrsr.fastpath import FastPath, pick_device
from mrsr.flops import datasheet_peak_tflops, flops_per_sample, mfu
from mrsr.io import atomic_path, clean_stale_temporaries, write_csv
from mrsr.machine import synchronize
from mrsr.metrics import crop_border, psnr
from mrsr.models import SuperResolver, build_model
from mrsr.provenance import git_revision
from mrsr.weights import save_weights


# seconds = steps_s + val_s + checkpoint_s + the epoch's set-up; steps_s of the first epoch includes
# compilation (first_step_s in the weights sidecar's "timing").
HISTORY_COLUMNS = ["epoch", "loss", "lr", "grad_norm", "val_psnr", "seconds", "steps_s", "samples_per_s",
                   "val_s", "checkpoint_s"]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN or Inf; the message names the epoch and step."""


@dataclass
class TrainConfig:
    """The ``train`` settings of one run: :func:`mrsr.config.job_train_settings` of a loaded config.

    Every key is given: the defaults live in one place, the schema (workflow/schemas/config.schema.yaml),
    and loading a config fills them in. Tests build one from a profile (tests/conftest.py, ``train_config``).
    """

    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    # "all" or "conv_weights": decay only the kernels (tensors of 2 or more dimensions), not biases
    # or PReLU slopes.
    weight_decay_params: str
    batch_size: int
    epochs: int
    steps_per_epoch: int | None
    lr_step_epochs: int
    lr_gamma: float
    clip_theta: float | None
    clip_adjustable: bool
    val_slices: int
    seed: int
    deterministic: bool
    device: str
    threads: int
    amp: str
    channels_last: str
    compile: str
    checkpoint_every_s: float
    # --- the recipe beyond optimiser and rate (docs/models.md, "Training recipes") ---------------
    # Learning-rate multiplier per named parameter group of the model (SuperResolver.param_groups),
    # e.g. {"last": 0.1}; a group not named gets 1.
    param_groups: dict[str, float]
    # Initialisation per group, {all | GROUP: default | he | gaussian | zero | bicubic}, applied after
    # the model's own (mrsr.models.base.INIT_SCHEMES); init_std is the Gaussian's standard deviation.
    init: dict[str, str]
    init_std: float
    # Learning-rate schedule, a factor of lr per optimiser step: "step" (x lr_gamma every
    # lr_step_epochs epochs) or "cosine" (from 1 down to lr_min_ratio at the last step), after
    # warmup_epochs of linear warm-up (0: none).
    schedule: str
    lr_min_ratio: float
    warmup_epochs: int
    # "mean": 1/2 MSE averaged over the patch's pixels; "sum": summed over its pixels and averaged over
    # the batch (Caffe's EuclideanLoss, MatConvNet's: the units of SRCNN's, FSRCNN's and VDSR's
    # published SGD rates, which a mean loss would make hundreds of times smaller).
    loss_reduction: str
    # Where the recipe comes from, one line (shown by the report; not part of the fingerprint).
    recipe: str | None

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> TrainConfig:
        return cls(**section)


@dataclass
class LrSchedule:
    """The factor of every group's base rate at optimiser step ``step`` (``LambdaLR``'s lambda).

    A callable object rather than a closure, so ``LambdaLR.state_dict`` (the checkpoint) holds it.

    Args:
        kind: ``step`` or ``cosine``.
        steps_per_epoch: optimiser steps per epoch.
        epochs: epochs of the run (the cosine's length).
        lr_step_epochs, lr_gamma: the step schedule.
        lr_min_ratio: the cosine's final factor.
        warmup_epochs: linear warm-up from 1/(warm-up steps) to 1 (both schedules).
    """

    kind: str
    steps_per_epoch: int
    epochs: int
    lr_step_epochs: int
    lr_gamma: float
    lr_min_ratio: float
    warmup_epochs: int

    def __call__(self, step: int) -> float:
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / warmup
        if self.kind == "step":
            return self.lr_gamma ** (step // self.steps_per_epoch // self.lr_step_epochs)
        span = max(1, self.epochs * self.steps_per_epoch - warmup - 1)
        progress = min(1.0, (step - warmup) / span)
        return self.lr_min_ratio + (1 - self.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    @classmethod
    def from_config(cls, cfg: TrainConfig, steps_per_epoch: int) -> LrSchedule:
        return cls(cfg.schedule, steps_per_epoch, cfg.epochs, cfg.lr_step_epochs, cfg.lr_gamma, cfg.lr_min_ratio,
                   cfg.warmup_epochs)


def optimizer_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """One optimiser parameter group per non-empty named group of ``model``, at ``lr x multiplier``.

    Each group dict carries ``name`` (kept in the optimiser's and the checkpoint's state). With
    ``train.weight_decay_params: conv_weights`` a named group's biases and PReLU slopes (tensors of
    fewer than 2 dimensions) form a group of their own, ``NAME.no_decay``, at the same rate and
    weight decay 0.

    Raises:
        ConfigError: ``train.param_groups`` names a group the model does not have.
    """
    named = model.param_groups() if hasattr(model, "param_groups") else {"body": list(model.parameters())}
    multipliers = dict(cfg.param_groups)
    unknown = sorted(set(multipliers) - set(named))
    if unknown:
        raise ConfigError(f"config key 'train.param_groups': {type(model).__name__} has no group "
                          f"{', '.join(map(repr, unknown))}; its groups: {', '.join(named) or 'none'}")
    groups = []
    for name, params in named.items():
        rate = cfg.lr * multipliers.get(name, 1.0)
        if cfg.weight_decay_params == "conv_weights":
            kernels = [p for p in params if p.ndim >= 2]
            others = [p for p in params if p.ndim < 2]
            groups += [{"params": kernels, "lr": rate, "name": name},
                       {"params": others, "lr": rate, "name": f"{name}.no_decay", "weight_decay": 0.0}]
        else:
            groups.append({"params": params, "lr": rate, "name": name})
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fast: FastPath | None = None) -> torch.optim.Optimizer:
    """SGD or Adam per ``cfg``, one parameter group per named group of the model at its own rate
    (:func:`optimizer_groups`); fused into one kernel per step where ``fast`` says it is supported."""
    extra = fast.optimizer_options() if fast is not None else {}
    groups = optimizer_groups(model, cfg) or list(model.parameters())  # bicubic: torch's own refusal
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **extra)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def effective_recipe(model: SuperResolver, cfg: TrainConfig, options: dict[str, Any], steps_per_epoch: int
                     ) -> dict[str, Any]:
    """What a job was trained with, in one JSON-able dict (the weights sidecar's ``recipe``).

    ``groups``: each named group's rate, multiplier and parameter count (empty groups left out);
    ``init``: ``train.init`` over the model's own initialisation options (``model.<name>``).
    """
    named = model.param_groups()
    multipliers = cfg.param_groups
    init = dict(cfg.init or {"all": "default"})
    return {
        "optimizer": cfg.optimizer, "lr": cfg.lr, "momentum": cfg.momentum if cfg.optimizer == "sgd" else None,
        "weight_decay": cfg.weight_decay, "weight_decay_params": cfg.weight_decay_params,
        "loss_reduction": cfg.loss_reduction,
        "groups": {name: {"lr": cfg.lr * multipliers.get(name, 1.0), "multiplier": multipliers.get(name, 1.0),
                          "parameters": sum(p.numel() for p in params)}
                   for name, params in named.items() if params},
        "init": {"train": init, "std": cfg.init_std if "gaussian" in init.values() else None,
                 "model_options": {k: v for k, v in options.items() if k.endswith("_init")}},
        "schedule": {"kind": cfg.schedule, "warmup_epochs": cfg.warmup_epochs,
                     **({"lr_step_epochs": cfg.lr_step_epochs, "lr_gamma": cfg.lr_gamma} if cfg.schedule == "step"
                        else {"lr_min_ratio": cfg.lr_min_ratio})},
        "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch, "batch_size": cfg.batch_size,
        "clip": None if cfg.clip_theta is None else {"theta": cfg.clip_theta, "adjustable": cfg.clip_adjustable},
        "source": cfg.recipe,
    }


def make_train_step(model: SuperResolver, optimizer: torch.optim.Optimizer, fast: FastPath,
                    device: torch.device, *, loss_reduction: str, backend: str = "inductor",
                    fullgraph: bool = False) -> Any:
    """Return ``step(lr, hr, clip) -> (loss, grad_norm)``, both 0-d tensors left on the device.

    Shared by ``mrsr train`` and ``mrsr benchmark-train`` so the benchmark measures the real loop.
    The returned tensors belong to the caller, who may keep them across steps (the deferred sync).

    Args:
        model: the model, on ``device``, in training mode.
        optimizer: its optimiser.
        fast: the resolved fast path (autocast, memory format, compilation).
        device: the training device.
        backend: ``torch.compile`` backend when ``fast.compile_mode`` is set (tests: ``aot_eager``).
        fullgraph: make a graph break an error instead of a silent split (tests).
        loss_reduction: ``mean`` over pixels and batch, or ``sum`` over each patch's pixels and mean
            over the batch (``train.loss_reduction``).
    """
    if loss_reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")

    def forward_loss(lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        # Sum over the model's loss outputs of 1/2 MSE to the HR patch (eqs. 5-7). Outputs are
        # n x the LR patch; the paper's HR patch is (m - 1) n + 1, their top-left part.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast.bf16):
            outputs = model.loss_outputs(lr)
        p = hr.shape[-1]
        pixels = hr.shape[-1] * hr.shape[-2] if loss_reduction == "sum" else 1  # sum/B = mean x pixels
        return sum(0.5 * pixels * torch.mean((out[..., :p, :p].float() - hr) ** 2) for out in outputs)

    if fast.compile_mode:
        # Only the forward and the loss are compiled (AOTAutograd derives the backward); mode
        # "reduce-overhead" replays both as CUDA graphs. The optimiser step stays eager (fused).
        options = {"mode": fast.compile_mode} if backend == "inductor" else {}
        compute = torch.compile(forward_loss, backend=backend, fullgraph=fullgraph, **options)
    else:
        compute = forward_loss
    params = [p for p in model.parameters() if p.requires_grad]
    memory_format = torch.channels_last if fast.channels_last else torch.contiguous_format

    def step(lr: torch.Tensor, hr: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        if fast.cuda_graphs:
            # A new iteration: the CUDA-graph trees may now reuse the previous replay's memory.
            torch.compiler.cudagraph_mark_step_begin()
        loss = compute(lr.contiguous(memory_format=memory_format), hr)
        # Under CUDA graphs the loss lives in the graph's static output memory, which the next replay
        # overwrites, while the caller keeps losses for a deferred host read (every sync_every steps;
        # a read per step would stall the GPU). So the caller gets a copy: one 4-byte device copy per
        # step, outside the graph, against the graph's reuse of all its memory. Eager losses are
        # fresh tensors already.
        kept = loss.detach().clone() if fast.cuda_graphs else loss.detach()
        if not params:  # bicubic: nothing to learn
            return kept, torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        optimizer.step()
        return kept, norm.detach()

    return step


@torch.inference_mode()
def validation_psnrs(model: SuperResolver, pairs: list[tuple[np.ndarray, np.ndarray]], border: int,
                     device: torch.device) -> list[float]:
    """PSNR of each whole held-out slice, with the evaluation's crop and clipping (a paired
    comparison of two runs compares these slice by slice)."""
    model.eval()
    values = []
    for lr, hr in pairs:
        sr = model(torch.from_numpy(lr)[None, None].to(device))[0, 0].float().cpu().numpy()
        values.append(psnr(crop_border(hr, border), crop_border(np.clip(sr, 0, 1), border)))
    model.train()
    return values


def validation_psnr(model: SuperResolver, pairs: list[tuple[np.ndarray, np.ndarray]], border: int, device: torch.device) -> float:
    """Mean PSNR over whole held-out slices (:func:`validation_psnrs`); NaN without slices."""
    return float(np.mean(validation_psnrs(model, pairs, border, device))) if pairs else float("nan")


# --- checkpoints: one safetensors file, the rest as JSON in its header (never a pickle) ----------
CHECKPOINT_KEY = "mrsr_checkpoint"  # safetensors metadata key holding the JSON part
# Settings that change neither what the finished epochs computed nor what the next one will: a run
# may be made longer or moved to other hardware and still resume. Every other setting is fingerprinted.
# (``recipe`` is a note. ``epochs`` is fingerprinted after all under a cosine schedule, whose curve
# depends on the run's length.)
RESUMABLE_ACROSS = frozenset({"epochs", "threads", "device", "compile", "channels_last", "checkpoint_every_s",
                              "recipe"})


def run_fingerprint(job: Job, cfg: TrainConfig, options: dict[str, Any], lr_shape: tuple, hr_shape: tuple
                    ) -> dict[str, Any]:
    """What a checkpoint must have been trained under to be resumed: the job, the model options,
    the training settings (but ``RESUMABLE_ACROSS``) and the patch set's shapes (JSON-normalised).

    Args:
        job: the (model, strategy, scale).
        cfg: the job's training settings.
        options: the model builder's keyword arguments.
        lr_shape, hr_shape: shapes of the LR and HR patch arrays.
    """
    train_settings = {k: v for k, v in asdict(cfg).items()
                      if k not in RESUMABLE_ACROSS or (k == "epochs" and cfg.schedule == "cosine")}
    fingerprint = {"job": job.name, "model_options": options, "train": train_settings,
                   "patches": {"lr": list(lr_shape), "hr": list(hr_shape)}}
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, history: list[dict],
                    fingerprint: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Write the resumable state as ONE file, atomically: a kill leaves the previous checkpoint or
    this one, never weights of one epoch with the optimiser state of another.

    Args:
        path: the checkpoint (``.safetensors``).
        model, optimizer, scheduler: the state to save.
        epoch: epochs done.
        history: one dict per epoch done.
        fingerprint: :func:`run_fingerprint` of the run (refused on resume when it differs).
        extra: facts of the run's start that the sidecar reports (``initial_val_psnr``).
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    meta = {"format": 2, "epoch": epoch, "history": history, "optim_scalars": scalars,
            "param_groups": opt_state["param_groups"], "scheduler": scheduler.state_dict(),
            "fingerprint": fingerprint, "extra": extra or {}}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta, default=str)})
    path.with_suffix(".json").unlink(missing_ok=True)  # the sidecar of the old two-file format


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device,
                    fingerprint: dict[str, Any] | None = None) -> tuple[int, list[dict], dict[str, Any]] | None:
    """Restore a checkpoint; returns (epochs done, history, extra), or None (with the reason printed) when
    it cannot be resumed: unreadable, of the old two-file format, or written under another
    fingerprint (other settings, model options or patches: resuming would mix two runs).

    Args:
        path: the checkpoint.
        model, optimizer, scheduler: restored in place.
        device: where the tensors go.
        fingerprint: the current run's :func:`run_fingerprint`.
    """
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {})[CHECKPOINT_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors and json raise their own types; a torn file any of them
        print(f"{path}: not a resumable checkpoint ({type(exc).__name__}: {exc}); starting from epoch 0")
        return None
    if meta.get("fingerprint") != fingerprint:
        changed = _differences(meta.get("fingerprint") or {}, fingerprint or {})
        print(f"{path}: written under other settings ({'; '.join(changed[:6])}); not resumed, starting from epoch 0")
        return None
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
    return int(meta["epoch"]), list(meta["history"]), dict(meta.get("extra") or {})


def run_timing(timing: dict[str, Any], history: list[dict], job: Job, options: dict[str, Any],
               patch_sizes: tuple[int, int], device: torch.device) -> dict[str, Any]:
    """The run's seconds by phase, its steady step rate and its MFU (the weights sidecar's ``timing``).

    Args:
        timing: ``setup_s`` (config, model, patches to the device) and ``first_step_s`` (compilation).
        history: the epochs' rows (HISTORY_COLUMNS); a resumed run's earlier rows included.
        job: the trained job; ``options`` its model options (for the FLOP count).
        patch_sizes: (LR, HR) patch sides.
        device: the training device (MFU against its datasheet bf16 peak; None without one).
    """
    rows = [r for r in history if r.get("steps_s")]
    steady = rows[1:] or rows  # the first epoch includes compilation
    seconds = sum(r["steps_s"] for r in steady)
    rate = sum(r["samples_per_s"] * r["steps_s"] for r in steady) / seconds if seconds else float("nan")
    per_sample = flops_per_sample(job, options, *patch_sizes, batch=1)
    peak = datasheet_peak_tflops(device)
    total = lambda key: sum(r.get(key) or 0.0 for r in rows)  # noqa: E731
    return {
        **timing, "epochs_s": total("seconds"), "steps_s": total("steps_s"), "val_s": total("val_s"),
        "checkpoint_s": total("checkpoint_s"),
        "steady_samples_per_s": rate, "flops_per_sample": per_sample,
        "achieved_tflops": rate * per_sample / 1e12, "mfu": mfu(rate, per_sample, peak) if peak else None,
    }


def build_for_training(job: Job, cfg: TrainConfig, options: dict[str, Any], device: torch.device,
                       fast: FastPath) -> SuperResolver:
    """The job's model, initialised per ``train.init`` and placed on ``device`` in the fast path's layout.

    Raises:
        ConfigError: ``train.init`` names a group or scheme the model cannot take.
    """
    model = build_model(job.model, job.scale, job.strategy, **options)
    if cfg.init:
        try:
            model.apply_init(cfg.init, cfg.init_std)
        except ValueError as exc:
            raise ConfigError(f"config key 'train.init' of {job.name}: {exc}") from exc
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if fast.channels_last else model


@dataclass
class PatchSet:
    """A scale's training patches, on the training device (a batch is one on-device index), and the
    validation slices stored beside them (up to ``train.val_slices``)."""

    lr: torch.Tensor
    hr: torch.Tensor
    val_pairs: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def load(cls, patches: Path, job: Job, cfg: TrainConfig, device: torch.device) -> PatchSet:
        """Read ``mrsr patches``' npz.

        Raises:
            ConfigError: no patches, or a batch larger than the patch set.
        """
        data = np.load(patches)
        lr_all, hr_all = torch.from_numpy(data["lr"]).to(device), torch.from_numpy(data["hr"]).to(device)
        stored_val = sum(k.startswith("val_lr_") for k in data.files)
        val_pairs = [(data[f"val_lr_{i}"], data[f"val_hr_{i}"]) for i in range(min(stored_val, cfg.val_slices))]
        n = len(lr_all)
        if n == 0:
            raise ConfigError(f"{patches}: no training patches (config key 'patches.x{job.scale}.lr_size' larger than the images?)")
        if cfg.batch_size > n:  # every batch would repeat patches; and memory grows with the batch, not the data
            raise ConfigError(f"config key 'train.batch_size': {cfg.batch_size} is larger than the {n} training patches "
                              f"of x{job.scale}; use at most {n}")
        return cls(lr_all, hr_all, val_pairs)


def resume_or_start(checkpoint: Path, model: SuperResolver, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LambdaLR, fingerprint: dict[str, Any], job: Job,
                    data: PatchSet, border: int, device: torch.device) -> tuple[int, list[dict], dict[str, Any]]:
    """(epochs done, history, extra sidecar facts): from the checkpoint when it was written under the
    same settings, else a fresh start with where training starts from.

    A fresh start measures the model and bicubic on the validation slices: the facts that say
    whether two jobs (Table 1's strategies) started alike, and how far one got.
    """
    clean_stale_temporaries(checkpoint.parent)  # half-written checkpoints of killed runs
    resumed = load_checkpoint(checkpoint, model, optimizer, scheduler, device, fingerprint) if checkpoint.exists() else None
    if resumed is not None:
        print(f"{job.name}: resuming after epoch {resumed[0]} from {checkpoint}")
        return resumed
    bicubic = build_model("bicubic", job.scale).to(device)
    return 0, [], {"initial_val_psnr": validation_psnr(model, data.val_pairs, border, device),
                   "bicubic_val_psnr": validation_psnr(bicubic, data.val_pairs, border, device)}


@dataclass
class Epochs:
    """What every epoch of one run shares, and one epoch: its steps and validation (:meth:`run`)."""

    job: Job
    cfg: TrainConfig
    device: torch.device
    model: SuperResolver
    data: PatchSet
    border: int
    steps_per_epoch: int
    schedule: LrSchedule
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_step: Any  # make_train_step's step(lr, hr, clip) -> (loss, gradient norm)
    sync_every: int
    checkpoint: Path
    timing: dict[str, Any]

    def run(self, epoch: int) -> dict[str, Any]:
        """Run epoch ``epoch``'s optimiser steps and validation; its history row (``seconds`` and
        ``checkpoint_s`` are the caller's).

        The patch order comes from a generator seeded with (seed, epoch), so a resumed run sees
        exactly the batches an uninterrupted one would.

        Raises:
            NonFiniteLossError: a NaN or Inf loss or gradient norm, naming epoch and step.
        """
        cfg, n, steps = self.cfg, len(self.data.lr), self.steps_per_epoch
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # Enough permutations to cover `steps` batches; each batch is a slice of indices on device.
        reps = math.ceil(steps * cfg.batch_size / n)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)]).to(self.device)
        lr_now = cfg.lr * self.schedule(self.scheduler.last_epoch)  # the base rate (multiplier 1) at this step
        losses, norms = [], []
        bar = tqdm(range(steps), desc=f"{self.job.name} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not os.isatty(2))
        t_steps = time.perf_counter()
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            # Adjustable clipping (VDSR): theta over the current base rate, which moves every step.
            rate = cfg.lr * self.schedule(self.scheduler.last_epoch)
            clip = None if cfg.clip_theta is None else (cfg.clip_theta / rate if cfg.clip_adjustable else cfg.clip_theta)
            loss, norm = self.train_step(self.data.lr[idx], self.data.hr[idx], clip)
            self.scheduler.step()
            losses.append(loss)
            norms.append(norm)
            if self.timing["first_step_s"] is None:  # compilation (and CUDA-graph recording) happen here
                synchronize(self.device)
                self.timing["first_step_s"] = time.perf_counter() - t_steps
            if (step + 1) % self.sync_every == 0 or step + 1 == steps:
                recent = self._check_finite(losses, norms, epoch)
                bar.set_postfix(loss=f"{recent[-1].item():.2e}")
        steps_s = time.perf_counter() - t_steps  # the last step's loss was read: the GPU is done
        t_val = time.perf_counter()
        val_psnr = validation_psnr(self.model, self.data.val_pairs, self.border, self.device)
        return {"epoch": epoch + 1, "loss": torch.stack(losses).float().mean().item(), "lr": lr_now,
                "grad_norm": torch.stack(norms).float().mean().item(), "val_psnr": val_psnr, "seconds": 0.0,
                "steps_s": steps_s, "samples_per_s": steps * cfg.batch_size / steps_s,
                "val_s": time.perf_counter() - t_val, "checkpoint_s": 0.0}

    def _check_finite(self, losses: list[torch.Tensor], norms: list[torch.Tensor], epoch: int) -> torch.Tensor:
        """Read the last ``sync_every`` losses and gradient norms back; the first non-finite one stops the run.

        The gradient norm too: with clipping, an infinite gradient is scaled to zero and the loss
        stays finite while nothing is learnt (lr 1e6 "trained" to exit 0). Returns the losses read.
        """
        recent = torch.stack(losses[-self.sync_every:]).float().cpu()
        recent_norms = torch.stack(norms[-self.sync_every:]).float().cpu()
        bad = (~(torch.isfinite(recent) & torch.isfinite(recent_norms))).nonzero()
        if len(bad):
            k = int(bad[0, 0])
            first = len(losses) - len(recent) + k
            what = "loss" if not torch.isfinite(recent[k]) else "gradient norm"
            value = (recent if what == "loss" else recent_norms)[k].item()
            raise NonFiniteLossError(
                f"{self.job.name}: {what} is {value} at epoch {epoch + 1}, step {first + 1}; "
                f"the last good checkpoint ({self.checkpoint}) is kept. Lower train.lr or set train.clip_theta."
            )
        return recent


def train(job: Job, patches: Path, weights_out: Path, config: dict[str, Any], checkpoint: Path | None = None,
          seed: int | None = None) -> list[dict]:
    """Train ``job`` and write its weights; returns the history (one dict per epoch).

    Args:
        job: the (model, strategy, scale) to train.
        patches: the scale's patches npz (``mrsr patches``).
        weights_out: ``.safetensors`` path for the final weights.
        config: the validated workflow config.
        checkpoint: checkpoint path (default: beside the weights, ``.ckpt.safetensors``).
        seed: the run's training seed (weight initialisation and batch order); None: the job's first
            seed (``train.seeds``/``train.seed``, :func:`mrsr.config.job_seeds`).
    """
    t_setup = time.perf_counter()
    cfg = TrainConfig.from_config(job_train_settings(config, job, seed=seed))
    device = pick_device(cfg.device)
    fast = FastPath.resolve(cfg, device, heavy=job.heavy)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fast.apply()  # cuDNN autotuning off and deterministic algorithms on when train.deterministic
    options = model_options(config, job.model)
    model = build_for_training(job, cfg, options, device, fast)
    checkpoint = checkpoint or weights_out.with_name(weights_out.stem + ".ckpt.safetensors")
    data = PatchSet.load(patches, job, cfg, device)
    steps, border = cfg.steps_per_epoch or math.ceil(len(data.lr) / cfg.batch_size), border_pixels(config, job.scale)
    optimizer = make_optimizer(model, cfg, fast)
    schedule = LrSchedule.from_config(cfg, steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)  # stepped once per optimiser step
    fingerprint = run_fingerprint(job, cfg, options, tuple(data.lr.shape), tuple(data.hr.shape))
    start, history, extra = resume_or_start(checkpoint, model, optimizer, scheduler, fingerprint, job, data, border, device)
    train_step = make_train_step(model, optimizer, fast, device, loss_reduction=cfg.loss_reduction)
    print(f"{job.name}: {len(data.lr)} patches, {steps} steps of {cfg.batch_size} per epoch, device {device}, {fast}")
    timing: dict[str, Any] = {"setup_s": time.perf_counter() - t_setup, "first_step_s": None}  # beside the steps
    epochs = Epochs(job, cfg, device, model, data, border, steps, schedule, scheduler, train_step, fast.sync_every,
                    checkpoint, timing)
    last_checkpoint = time.monotonic()
    model.train()
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        history.append(row := epochs.run(epoch))
        # Every checkpoint_every_s, not every epoch (a light model's paper epoch on a GPU takes about a
        # second); a killed job redoes at most that much. The last epoch's weights are written next.
        if epoch + 1 < cfg.epochs and time.monotonic() - last_checkpoint >= cfg.checkpoint_every_s:
            t_ckpt = time.perf_counter()
            row["seconds"] = t_ckpt - t0  # the checkpoint's history is complete up to here
            save_checkpoint(checkpoint, model, optimizer, scheduler, epoch + 1, history, fingerprint, extra)
            row["checkpoint_s"], last_checkpoint = time.perf_counter() - t_ckpt, time.monotonic()
        row["seconds"] = time.perf_counter() - t0
        print(json.dumps(row))
    write_run(weights_out, model, history, checkpoint, {
        "model": job.model, "scale": job.scale, "strategy": job.strategy, "options": options,
        "train": asdict(cfg), "config": config, "git_revision": git_revision(),
        "patches": {"file": str(patches), "count": len(data.lr)}, "device": str(device),
        "final_val_psnr": history[-1]["val_psnr"] if history else None,
        **extra,  # initial_val_psnr, bicubic_val_psnr
        "recipe": effective_recipe(model, cfg, options, steps), "torch": torch.__version__, "fast_path": asdict(fast),
        "timing": run_timing(timing, history, job, options, (data.lr.shape[-1], data.hr.shape[-1]), device)})
    return history


def write_run(weights_out: Path, model: SuperResolver, history: list[dict], checkpoint: Path, meta: dict[str, Any]) -> None:
    """Write the trained weights with their sidecar ``meta`` and the history CSV; remove the checkpoint."""
    save_weights(weights_out, model, meta)
    write_csv(weights_out.with_name(weights_out.stem + ".history.csv"), pd.DataFrame(history, columns=HISTORY_COLUMNS))
    for leftover in (checkpoint, checkpoint.with_suffix(".json")):
        leftover.unlink(missing_ok=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", required=True, type=arg_type(Job.from_name),
                        help="MODEL_xSCALE or MODEL_STRATEGY_xSCALE, e.g. proposed_multi_x2 or srcnn_x3")
    parser.add_argument("--patches", required=True, type=existing_file, help="the scale's patches .npz (mrsr patches)")
    parser.add_argument("--config", required=True, type=Path, help="workflow config (train section, model options)")
    parser.add_argument("--out", required=True, type=output_file, help="weights .safetensors to write")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (overrides train.threads)")
    parser.add_argument("--seed", type=arg_type(_seed), default=None,
                        help="training seed of this run: weight initialisation and batch order (default: the "
                             "job's first of train.seeds; the workflow runs each seed into models/<profile>/seed<k>/)")


def _seed(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise UsageError(f"{text}: a seed is a non-negative integer")
    return int(text)


def run(args: argparse.Namespace) -> int:
    if args.out.suffix != ".safetensors":  # save_weights would refuse it, but only after training
        raise UsageError(f"--out {args.out}: weights are written as .safetensors (with a .json sidecar)")
    config = load_config(args.config)
    if args.threads:
        config["train"]["threads"] = args.threads
    try:
        train(args.job, args.patches, args.out, config, seed=args.seed)
    except NonFiniteLossError as exc:
        print(f"error: {exc}")
        return 3
    return 0
