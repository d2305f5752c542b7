"""The GPU fast path in one place: which device, what ``auto`` means on it, and the backend flags.

``mrsr train``, ``mrsr benchmark-train`` and ``mrsr upscale`` all go through here, so the benchmark
measures exactly the settings that training runs with. The MFU formula, the peaks and the FLOP counts
are in :mod:`mrsr.flops`; threads, devices and the roofline in :mod:`mrsr.machine`.

Why CUDA ``auto`` is what it is: figures of one H100 (the baseline of docs/benchmarks.md's GPU check), proposed multi x2,
batch 128, samples/s (MFU against the dense bf16 datasheet peak, 989 TFLOP/s; 3,232 MFLOP/sample):

=================================================  ==========  =======
fp32 eager                                             14,698     4.8%
bf16 autocast, eager                                   11,989     3.9%
bf16, ``torch.compile`` (mode "default")               22,880     7.5%
bf16, ``torch.compile`` mode "reduce-overhead"         40,323    13.2%
bf16 eager at batch 1024 (not the protocol's 128)      42,056    13.7%
ESPCN x2, bf16 compile                                 78,458    (host-bound: tiny kernels)
=================================================  ==========  =======

bf16 eager is *slower* than fp32 eager at batch 128, yet 3.5 times faster at batch 1024: at the
protocol's batch size the step is bound by kernel launches on the host, not by the GPU. CUDA graphs
(mode "reduce-overhead") replay the whole forward and backward with one launch, which recovers the
large-batch rate at batch 128; so CUDA ``auto`` is bf16 + channels_last + CUDA graphs.

CPU ``auto``, measured with ``mrsr benchmark-train`` on the proposed net multi x2, batch 128,
2 threads of an AMD EPYC with AVX-512 BF16 (2026-12-03; docs/benchmarks.md), samples/s:

=================================================  ==========
fp32 eager                                              36.4
fp32, channels_last                                     54.1
bf16 autocast                                           82.8
bf16, channels_last                                    102.4
bf16, channels_last, ``torch.compile``                  94.4
=================================================  ==========

So for the heavy nets (the proposed net, de-CNN, FSCWN: ``gpu_slots`` HEAVY) CPU ``auto`` is
channels_last everywhere and bf16 autocast where the CPU has bfloat16 instructions (AVX-512 BF16,
AMX); without them bf16 is emulated and about 10 x slower, so fp32 stays. Compilation does not pay on
a CPU. The light baselines stay fp32 NCHW: their steps are small enough that layout conversions and
autocast casts cost about what they save.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from mrsr import machine
from mrsr.errors import UsageError

COMPILE_MODES = {"on": "default", "cudagraphs": "reduce-overhead", "off": None}
# Steps between reads of the loss back to the host on a GPU (finiteness check, progress bar). A read
# drains the GPU's queue; every 50 steps that costs well under 1% of a step's time each time.
GPU_SYNC_INTERVAL = 50


class DeviceError(UsageError):
    """The requested device cannot be used here; the message is one line, for the user."""


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cuda`` without CUDA -> :class:`DeviceError`.

    Args:
        name: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked, but CUDA is not available here (no GPU or a CPU-only "
                          "PyTorch build); use cpu or auto.")
    return torch.device(name)


def sync_interval(device: torch.device) -> int:
    """Steps between host reads of the loss: every step on the CPU (free there), else 50."""
    return 1 if device.type == "cpu" else GPU_SYNC_INTERVAL


class FastPathSettings(Protocol):
    """The config keys the fast path is resolved from (``train.*``; :class:`mrsr.train.TrainConfig`)."""

    amp: str
    channels_last: str
    compile: str
    deterministic: bool


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic in hardware (:data:`mrsr.machine.BF16_FLAGS`)."""
    return bool(machine.cpu_info()["bf16_native"])


def fused_optimizers_supported(device: torch.device) -> bool:
    """Whether this torch has fused (single-kernel) SGD and Adam for ``device`` (CUDA, torch >= 2.4)."""
    return device.type == "cuda" and "fused" in inspect.signature(torch.optim.SGD).parameters


@dataclass(frozen=True)
class FastPath:
    """The resolved fast-path switches for one device.

    Args:
        bf16: bfloat16 autocast in the forward pass (the loss is taken in fp32).
        channels_last: NHWC activations and weights (the tensor cores' native layout).
        compile_mode: ``None`` (eager), ``"default"`` or ``"reduce-overhead"`` (CUDA graphs).
        fused_optimizer: one fused kernel for the optimiser step instead of a foreach loop.
        cudnn_benchmark: let cuDNN time its algorithms per shape (off when deterministic).
        deterministic: deterministic algorithms (``train.deterministic``).
        sync_every: steps between host reads of the loss.
    """

    bf16: bool
    channels_last: bool
    compile_mode: str | None
    fused_optimizer: bool = False
    cudnn_benchmark: bool = False
    deterministic: bool = False
    sync_every: int = 1

    @property
    def cuda_graphs(self) -> bool:
        """Whether compiled steps replay CUDA graphs (whose outputs the next replay overwrites)."""
        return self.compile_mode == "reduce-overhead"

    @classmethod
    def resolve(cls, cfg: FastPathSettings, device: torch.device, heavy: bool = False) -> FastPath:
        """Resolve every ``auto`` for ``device``: on CUDA the H100-measured choices above; on a CPU,
        for a heavy net, channels_last and (where the CPU has bfloat16 instructions) bf16; else off.

        Explicit settings win on any device (``amp: bf16`` and ``compile: on`` also run on a CPU).

        Args:
            cfg: the ``train`` settings.
            device: the training device.
            heavy: the model is one of the heavy nets (:attr:`mrsr.config.Job.heavy`:
                :data:`mrsr.models.base.HEAVY` GPU slots).
        """
        cuda = device.type == "cuda"
        cpu_heavy = device.type == "cpu" and heavy
        bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and (cuda or (cpu_heavy and cpu_has_bf16())))
        channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and (cuda or cpu_heavy))
        # auto on CUDA: CUDA graphs, 40,323 against 22,880 samples/s for plain compilation (above).
        mode = COMPILE_MODES[cfg.compile] if cfg.compile in COMPILE_MODES else ("reduce-overhead" if cuda else None)
        return cls(
            bf16=bf16,
            channels_last=channels_last,
            compile_mode=mode,
            fused_optimizer=fused_optimizers_supported(device),
            # cuDNN's autotuner may pick a different (non-deterministic) algorithm per run.
            cudnn_benchmark=cuda and not cfg.deterministic,
            deterministic=bool(cfg.deterministic),
            sync_every=sync_interval(device),
        )

    def apply(self) -> None:
        """Set the process-wide backend flags (cuDNN autotuning, deterministic algorithms).

        Deterministic mode on CUDA: cuBLAS needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read
        when cuBLAS starts, so it is set before the first matrix product), and PyTorch's filling of
        fresh allocations with NaN (a debugging aid for reads of uninitialised memory, which no op
        here does) is turned off: it would add a kernel per allocation without changing a result.
        """
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.use_deterministic_algorithms(self.deterministic, warn_only=True)
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.utils.deterministic.fill_uninitialized_memory = False

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for ``torch.optim.SGD``/``Adam``: ``fused=True`` where supported."""
        return {"fused": True} if self.fused_optimizer else {}
