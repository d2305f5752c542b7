"""The GPU fast path in one place: which device, what ``auto`` means on it, the backend flags, and
the model FLOP utilisation (MFU) formula.

``mrsr train``, ``mrsr benchmark-train`` and ``mrsr upscale`` all go through here, so the benchmark
measures exactly the settings that training runs with.

Why CUDA ``auto`` is what it is: H100 figures measured by a colleague (issue #12), proposed multi x2,
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
large-batch rate at batch 128; so CUDA ``auto`` is bf16 + channels_last + CUDA graphs. On a CPU none
of this pays (bf16 is emulated without AMX/AVX-512-BF16, compilation costs more than it saves in a
few-minute run), so CPU ``auto`` is plain fp32 eager.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.utils.flop_counter import FlopCounterMode

from mrsr.config import Job
from mrsr.errors import UsageError
from mrsr.models import build_model

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0, "L4": 121.0,
}
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
    def resolve(cls, cfg: FastPathSettings, device: torch.device) -> FastPath:
        """Resolve every ``auto`` for ``device``: on CUDA the H100-measured choices above, on a CPU off.

        Explicit settings win on any device (``amp: bf16`` and ``compile: on`` also run on a CPU).
        """
        cuda = device.type == "cuda"
        bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and cuda)
        channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and cuda)
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


# --- model FLOP utilisation --------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def datasheet_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 datasheet peak of a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # most specific name first
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Best TFLOP/s of an n x n matrix product on ``device`` (the roofline when no datasheet fits)."""
    if device.type == "cpu":
        n = min(n, 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def peak_tflops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """(peak TFLOP/s, "datasheet" | "measured"): the datasheet bf16 peak of a known GPU, else a
    matrix product measured now in the precision training runs in."""
    peak = datasheet_peak_tflops(device)
    if peak is not None:
        return peak, "datasheet"
    return measured_matmul_tflops(device, torch.bfloat16 if bf16 else torch.float32), "measured"


def flops_per_sample(job: Job, options: dict[str, Any], lr_size: int, hr_size: int, batch: int = 4) -> float:
    """Forward + backward FLOPs per training patch, counted on a small CPU batch in fp32.

    Args:
        job: the (model, strategy, scale).
        options: the model's options (``model.<name>`` of the config).
        lr_size: LR patch side.
        hr_size: HR patch side (the loss crops the outputs to it).
        batch: patches in the counted batch (the count is per patch).
    """
    model = build_model(job.model, job.scale, job.strategy, **options)
    lr = torch.rand(batch, 1, lr_size, lr_size)
    with FlopCounterMode(display=False) as counter:
        outputs = model.loss_outputs(lr)
        sum(out[..., :hr_size, :hr_size].float().mean() for out in outputs).backward()
    return counter.get_total_flops() / batch


def mfu(samples_per_s: float, flops_per_sample: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: the model's FLOP/s (forward + backward) over the device's peak."""
    return samples_per_s * flops_per_sample / (peak_tflops * 1e12)
