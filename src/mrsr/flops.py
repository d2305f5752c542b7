"""What a model costs and what fraction of the peak a run reaches: FLOP counts, datasheet peaks and
the model FLOP utilisation (MFU) formula, the one ``mrsr train`` and ``mrsr benchmark-train`` share.

- FLOPs (:func:`count_flops`, :func:`flops_per_sample`): ``torch.utils.flop_counter.FlopCounterMode``,
  convolutions, transposed convolutions and matrix products, 2 FLOPs per multiply-add;
  :func:`count_flops` is also Table 3's GFLOP per slice (``mrsr timing``, ``mrsr benchmark``);
- MFU (:func:`mfu`): achieved FLOP/s over the peak of :func:`peak_tflops` (a GPU's datasheet bf16
  peak when known, else the roofline of :func:`mrsr.machine.matmul_roofline` measured in the
  training precision, the roofline Table 3's ratio uses).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mrsr.config import Job
from mrsr.machine import matmul_roofline
from mrsr.models import build_model

FLOP_METHOD = "torch.utils.flop_counter.FlopCounterMode (conv, transposed conv, matmul; 2 FLOPs per multiply-add)"
# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
BF16_PEAK_TFLOPS = {
    "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
    "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0, "L4": 121.0,
}


def _counted_flops(work: Callable[[], object]) -> float:
    """FLOPs ``work()`` runs, by :data:`FLOP_METHOD`."""
    with FlopCounterMode(display=False) as counter:
        work()
    return float(counter.get_total_flops())


def count_flops(model: nn.Module, lr: torch.Tensor) -> float:
    """FLOPs of one float32 forward pass of ``model`` on ``lr`` (Table 3's GFLOP per slice).

    Counted under ``no_grad``, not inference mode: the same maths, but through aten convolutions,
    which the counter knows (it does not count the fused oneDNN ops of the inference fast path).

    Args:
        model: any module (not modified).
        lr: its (B, C, h, w) input.
    """
    with torch.no_grad():
        return _counted_flops(lambda: model(lr.float()))


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

    def step() -> None:
        outputs = model.loss_outputs(lr)
        sum(out[..., :hr_size, :hr_size].float().mean() for out in outputs).backward()

    return _counted_flops(step) / batch


def datasheet_peak_tflops(device: torch.device) -> float | None:
    """The dense bf16 datasheet peak of a known GPU, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # most specific name first
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def peak_tflops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """(peak TFLOP/s, "datasheet" | "measured"): the datasheet bf16 peak of a known GPU, else
    :func:`matmul_roofline` measured now in the precision training runs in."""
    peak = datasheet_peak_tflops(device)
    if peak is not None:
        return peak, "datasheet"
    roofline = matmul_roofline(device=device, dtype=torch.bfloat16 if bf16 else torch.float32)
    return roofline["roofline_gflops"] / 1e3, "measured"


def mfu(samples_per_s: float, flops_per_sample: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: the model's FLOP/s (forward + backward) over the device's peak."""
    return samples_per_s * flops_per_sample / (peak_tflops * 1e12)
