"""``mrsr benchmark-train``: training throughput (samples/s) and model FLOP utilisation per job.

Runs the real training step (:func:`mrsr.train.make_train_step`, so the GPU fast path of
``train.amp/channels_last/compile`` is what gets measured) on synthetic patches of each scale's
paper size, resident on the device as in training, and reports:

- ``samples_per_s``: patches per second over the timed steps (after warm-up and compilation);
- ``flops_per_sample``: forward + backward FLOPs per patch (:func:`mrsr.flops.flops_per_sample`:
  :class:`torch.utils.flop_counter.FlopCounterMode`, convolutions and matrix products, 2 per MAC);
- ``mfu``: achieved FLOP/s over the device's peak (:func:`mrsr.flops.mfu`, the formula ``mrsr train``
  uses): the datasheet's dense bf16 peak for known GPUs (``peak_source: datasheet``), else the
  matmul roofline measured in the same run, in the precision training runs in (``peak_source:
  measured``; :func:`mrsr.machine.matmul_roofline`, the roofline of Table 3's ratio, so on a CPU the
  two are comparable);
- projections for the paper's protocol: seconds per epoch of ``--epoch-patches`` x2 patches (the
  other scales scaled by their patch grids) and for its 100 epochs.

Example: ``mrsr benchmark-train --model proposed --scale 2 --json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mrsr.config import Job, job_train_settings, load_config, model_options, training_jobs
from mrsr.data.patches import hr_patch_size
from mrsr.errors import UsageError
from mrsr.fastpath import FastPath, cpu_has_bf16, pick_device
from mrsr.flops import flops_per_sample, mfu, peak_tflops
from mrsr.machine import device_name, synchronize
from mrsr.models import MODEL_REGISTRY, build_model
from mrsr.train import TrainConfig, make_optimizer, make_train_step

PAPER_X2_EPOCH_PATCHES = 175_000  # the size of one paper epoch at x2
PAPER_EPOCHS = 100


@dataclass
class TrainBenchmark:
    """One job's figures (the JSON object printed per job)."""

    job: str
    device: str
    batch_size: int
    fast_path: dict[str, Any]
    samples_per_s: float
    flops_per_sample: float
    achieved_tflops: float
    peak_tflops: float
    peak_source: str
    mfu: float
    paper_epoch_patches: int
    paper_epoch_s: float
    paper_100_epochs_min: float
    timed_steps: int
    timed_s: float
    started_at: float  # Unix time at which the timed steps began (jobs sharing a GPU overlap)


def benchmark_job(job: Job, config: dict[str, Any], steps: int, warmup: int,
                  batch_size: int | None = None, epoch_patches: int = PAPER_X2_EPOCH_PATCHES,
                  not_before: float | None = None) -> TrainBenchmark:
    """Time ``steps`` training steps of ``job`` after ``warmup`` (which includes any compilation).

    Args:
        job: the job; its ``train`` settings (with the experiment's overrides) give the fast path.
        config: the validated workflow config.
        steps: timed steps.
        warmup: untimed steps first.
        batch_size: override ``train.batch_size``.
        epoch_patches: patches in one paper epoch at x2, for the projections.
        not_before: Unix time before which the timed steps do not start (several processes sharing
            one GPU then time the same interval).
    """
    cfg = TrainConfig.from_config(job_train_settings(config, job))
    if batch_size:
        cfg.batch_size = batch_size
    device = pick_device(cfg.device)
    fast = FastPath.resolve(cfg, device, heavy=job.heavy)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fast.apply()  # the backend flags training runs with (deterministic algorithms included)
    # Every job compiles the same function (make_train_step's forward_loss), and Dynamo keeps at most
    # recompile_limit (8) versions of one function: without a reset the 9th job of a config would
    # silently run eager. A reset also frees the previous job's CUDA graphs.
    torch._dynamo.reset()
    torch.manual_seed(cfg.seed)
    options = model_options(config, job.model)
    model = build_model(job.model, job.scale, job.strategy, **options).to(device)
    if fast.channels_last:
        model = model.to(memory_format=torch.channels_last)
    patch = config["patches"][f"x{job.scale}"]
    lr_size = patch["lr_size"]
    hr_size = hr_patch_size(lr_size, job.scale)
    # A pool of patches resident on the device, indexed per batch exactly as in training.
    pool = max(8 * cfg.batch_size, 1024)
    lr_all = torch.rand(pool, 1, lr_size, lr_size, device=device)
    hr_all = torch.rand(pool, 1, hr_size, hr_size, device=device)
    step = make_train_step(model, make_optimizer(model, cfg, fast), fast, device, loss_reduction=cfg.loss_reduction)
    clip = cfg.clip_theta
    order = torch.randint(0, pool, ((warmup + steps) * cfg.batch_size,), device=device)

    def run(first: int, count: int) -> None:
        for i in range(first, first + count):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            step(lr_all[idx], hr_all[idx], clip)

    run(0, warmup)
    synchronize(device)
    if not_before is not None:
        time.sleep(max(0.0, not_before - time.time()))
    started_at = time.time()
    t0 = time.perf_counter()
    run(warmup, steps)
    synchronize(device)
    seconds = time.perf_counter() - t0

    samples_per_s = steps * cfg.batch_size / seconds
    per_sample = flops_per_sample(job, options, lr_size, hr_size)
    peak, source = peak_tflops(device, fast.bf16)
    # Patches per paper epoch at this scale: the x2 figure times the ratio of patch-grid densities
    # (HR-space stride = LR stride x scale).
    x2_stride = config["patches"].get("x2", {"lr_stride": 11})["lr_stride"] * 2
    epoch = round(epoch_patches * (x2_stride / (patch["lr_stride"] * job.scale)) ** 2)
    return TrainBenchmark(
        job=job.name, device=device_name(device), batch_size=cfg.batch_size, fast_path=asdict(fast),
        samples_per_s=samples_per_s, flops_per_sample=per_sample, achieved_tflops=samples_per_s * per_sample / 1e12,
        peak_tflops=peak, peak_source=source, mfu=mfu(samples_per_s, per_sample, peak), paper_epoch_patches=epoch,
        paper_epoch_s=epoch / samples_per_s, paper_100_epochs_min=PAPER_EPOCHS * epoch / samples_per_s / 60,
        timed_steps=steps, timed_s=seconds, started_at=started_at,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.yaml", help="workflow config: models, patches, train settings")
    parser.add_argument("--model", choices=sorted(MODEL_REGISTRY), metavar="MODEL",
                        help="only this model (default: every training job of the config)")
    parser.add_argument("--scale", type=int, help="only this scale")
    parser.add_argument("--strategy", help="only this strategy (proposed)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per job")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override train.device")
    parser.add_argument("--amp", choices=["auto", "bf16", "off"], help="override train.amp")
    parser.add_argument("--compile", choices=["auto", "on", "cudagraphs", "off"], help="override train.compile")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], help="override train.channels_last")
    parser.add_argument("--deterministic", choices=["on", "off"], help="override train.deterministic (on: cuDNN "
                        "autotuning off, deterministic algorithms; what it costs)")
    parser.add_argument("--not-before", type=float, help="Unix time at which the timed steps start, at the "
                        "earliest (processes sharing a GPU time the same interval)")
    parser.add_argument("--epoch-patches", type=int, default=PAPER_X2_EPOCH_PATCHES,
                        help="patches in one paper epoch at x2, for the projections")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    parser.add_argument("--keep-going", action="store_true", help="a job that fails prints its error (a JSON "
                        "object with 'error' under --json) and the others still run; exit status 1")


def _override_train(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``train.<key>`` for every job: a command-line choice beats every per-experiment setting."""
    config["train"][key] = value
    for exp in config["experiments"]:
        (exp.get("train") or {}).pop(key, None)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for key in ("device", "amp", "compile", "channels_last", "deterministic"):
        value = getattr(args, key)
        if value:
            _override_train(config, key, {"on": True, "off": False}[value] if key == "deterministic" else value)
    jobs = [
        job for job in training_jobs(config)
        if (args.model is None or job.model == args.model) and (args.scale is None or job.scale == args.scale)
        and (args.strategy is None or job.strategy == args.strategy)
    ]
    if not jobs:
        trained = ", ".join(job.name for job in training_jobs(config))
        raise UsageError(f"{args.config} trains no job matching model={args.model} scale={args.scale} "
                         f"strategy={args.strategy} (it trains {trained})")
    # On a CPU with bfloat16 instructions, without --amp, each job is measured in fp32 and in bf16
    # (the speed-up and what it costs are read side by side); elsewhere as configured.
    both = (not args.amp and pick_device(config["train"]["device"]).type == "cpu" and cpu_has_bf16())
    precisions = ["off", "bf16"] if both else [None]
    failed = 0
    for job, amp in ((job, amp) for job in jobs for amp in precisions):
        try:
            if amp:
                _override_train(config, "amp", amp)
            result = benchmark_job(job, config, args.steps, args.warmup, args.batch_size, args.epoch_patches,
                                   args.not_before)
        except Exception as exc:
            if not args.keep_going:
                raise
            failed += 1
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            print(json.dumps({"job": job.name, "error": error}) if args.json else f"{job.name:22s} failed: {error}",
                  flush=True)
            continue
        if args.json:
            print(json.dumps(asdict(result)), flush=True)
        else:
            precision = "bf16" if result.fast_path["bf16"] else "fp32"
            print(f"{result.job:22s} {precision} {result.samples_per_s:10.1f} samples/s  {result.achieved_tflops:8.3f} TFLOP/s"
                  f"  MFU {100 * result.mfu:5.1f}% of {result.peak_tflops:.3g} TFLOP/s ({result.peak_source})"
                  f"  paper epoch {result.paper_epoch_s:8.1f} s  100 epochs {result.paper_100_epochs_min:7.1f} min",
                  flush=True)
    return 1 if failed else 0
