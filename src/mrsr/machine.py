"""The hardware layer: which CPU or GPU, how many threads, how much of the machine a measurement got,
and the matmul roofline. It knows no model and no config: what a model costs (FLOP counts, datasheet
peaks, the model FLOP utilisation formula) is :mod:`mrsr.flops`.

Table 3 (``mrsr timing``, ``mrsr benchmark``) and training's MFU (:func:`mrsr.flops.peak_tflops`
where no datasheet peak is known) take the roofline from here, so Table 3's roofline ratio and
training's MFU are measured against the same thing and can be compared:

- the roofline (:func:`matmul_roofline`): the GFLOP/s of an n x n matrix product through torch's two
  GEMM routes (BLAS, and the same product as a 1x1 convolution: oneDNN on a CPU, cuDNN on CUDA),
  the median of ``runs`` per route, the faster route counting.
"""

from __future__ import annotations

import functools
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mrsr.errors import UsageError, arg_type

# CPU flags that mean bfloat16 arithmetic in hardware (AVX-512 BF16, AMX, AVX-NE-CONVERT).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
ROOFLINE_N = {"cpu": 2048, "cuda": 4096}  # default matrix sides: a few tenths of a second per product


# --- which machine ------------------------------------------------------------------------------

@functools.cache
def _proc_cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in ``/proc/cpuinfo``; ("", {}) where it does not exist."""
    model, flags = "", frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:  # not Linux
        pass
    return model, flags


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``), or ``unknown``."""
    return _proc_cpuinfo()[0] or platform.processor() or "unknown"


def cpu_info() -> dict[str, Any]:
    """CPU model, cores, the vector ISA torch uses, and whether the CPU has bfloat16 instructions."""
    return {"cpu": cpu_model(), "cores": os.cpu_count() or 1, "isa": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": any(f in _proc_cpuinfo()[1] for f in BF16_FLAGS)}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def resolve_threads(threads: int) -> int:
    """``threads`` or, for 0, every core this process may run on."""
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _parse_threads(text: str) -> int:
    """``--threads`` text -> a count >= 0 (0: every core), else :class:`UsageError`."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise UsageError(f"{text!r} is not a thread count (0 = every core this process may run on, or N >= 1)")
    return count


thread_count = arg_type(_parse_threads)  # argparse ``type=`` of every ``--threads`` that :func:`use_threads` reads


def use_threads(threads: int) -> int:
    """Set torch's intra-op threads to :func:`resolve_threads` of ``threads``; returns the count.

    Every inference command (benchmark, timing, evaluate, upscale) goes through here, so ``0`` means
    the same everywhere: every core this process may run on (torch's own default can be fewer).
    """
    count = resolve_threads(threads)
    torch.set_num_threads(count)
    return count


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- how much of the machine a measurement got -------------------------------------------------

def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have run since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes kept busy during a ``with`` block (machine busy time minus ours).

    On a shared machine a timing is only as good as the CPU it got; this says how much it did not get.
    ``cores`` is None where ``/proc/stat`` does not exist.
    """

    def __enter__(self) -> OtherLoad:
        self.cores: float | None = None
        self._busy, self._own, self._wall = cpu_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = cpu_busy_seconds()
        if busy is not None and self._busy is not None:
            other = (busy - self._busy) - (time.process_time() - self._own)
            self.cores = max(0.0, other / (time.perf_counter() - self._wall))


def burn_in(seconds: float = 2.0, n: int = 1024) -> None:
    """Keep every thread busy with matrix products for ``seconds`` before anything is measured.

    A process's first seconds of work ran markedly slower than its later ones here (the roofline
    measured first in a run came out at 76-102 GFLOP/s, later ones at 170-183 on the same idle VM):
    thread pools, page faults and the host's clock take that long to settle.
    """
    a = torch.randn(n, n)
    end = time.perf_counter() + seconds
    with torch.inference_mode():
        while time.perf_counter() < end:
            torch.mm(a, a)


# --- the roofline -------------------------------------------------------------------------------

def matmul_roofline(n: int | None = None, runs: int = 5, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """The roofline: GFLOP/s of an n x n by n x n matrix product, the median of ``runs``.

    The one definition both Table 3's roofline ratio and training's measured MFU use. The product runs
    through both of torch's GEMM routes, alternately: BLAS (``torch.mm``: MKL on x86, cuBLAS on CUDA)
    and the convolution library (the same product as a 1x1 convolution over n pixels of n channels,
    channels-last: oneDNN on a CPU, cuDNN on CUDA; the library that runs the models' convolutions).
    The roofline is the faster route's median, so a model is never compared with a GEMM that a weaker
    library made look slow; ``roofline_best_gflops`` is the fastest single product.

    Args:
        n: matrix side; None: 2048 on a CPU, 4096 on a GPU.
        runs: timed products per route (after one untimed each).
        device: where to measure.
        dtype: float32 (Table 3, CPU training) or bfloat16 (GPU training under autocast).
    """
    device = torch.device(device)
    n = n or ROOFLINE_N.get(device.type, ROOFLINE_N["cpu"])
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    pixels = a.reshape(1, n, n, 1).permute(0, 2, 1, 3)  # (1, n channels, n, 1), channels-last in memory
    weight = b.t().contiguous().reshape(n, n, 1, 1)
    products: dict[str, Callable[[], torch.Tensor]] = {
        "blas": lambda: torch.mm(a, b, out=out), "conv": lambda: F.conv2d(pixels, weight)}
    seconds: dict[str, list[float]] = {k: [] for k in products}
    with torch.inference_mode(), OtherLoad() as load:
        for product in products.values():
            product()  # warm-up: threads started, pages touched, kernels generated
        synchronize(device)
        for _ in range(runs):
            for name, product in products.items():
                t0 = time.perf_counter()
                product()
                synchronize(device)
                seconds[name].append(time.perf_counter() - t0)
    gflops = {name: 2.0 * n**3 / float(np.median(s)) / 1e9 for name, s in seconds.items()}
    best = max(2.0 * n**3 / min(s) / 1e9 for s in seconds.values())
    return {"roofline_gflops": max(gflops.values()), "roofline_blas_gflops": gflops["blas"],
            "roofline_conv_gflops": gflops["conv"], "roofline_best_gflops": best, "roofline_n": n,
            "roofline_other_load_cores": load.cores}


class RooflineOfRun:
    """The roofline of a timing run: burn in, measure before the models (``with``) and after them.

    Other processes can only slow a measurement down, so the larger of the two is the better estimate
    of what the machine does, and the ratio a model gets against it the conservative one.

    Args:
        n: matrix side of :func:`matmul_roofline`.
    """

    def __init__(self, n: int | None = None) -> None:
        self.n = n
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def __enter__(self) -> RooflineOfRun:
        burn_in()
        self.before = matmul_roofline(self.n)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.after = matmul_roofline(self.n)

    @property
    def gflops(self) -> float:
        """The larger of the two measurements (GFLOP/s)."""
        return max(self.before["roofline_gflops"], self.after["roofline_gflops"])

    def figures(self) -> dict[str, Any]:
        """``roofline_gflops`` with the two measurements (``roofline_before``, ``roofline_after``)."""
        return {"roofline_gflops": self.gflops, "roofline_before": self.before, "roofline_after": self.after}
