"""The one inference path: load a model, prepare it, run a slice, run a large slice in tiles.

``mrsr evaluate`` (Table 2), ``mrsr timing`` and ``mrsr benchmark`` (Table 3) and ``mrsr upscale`` all
run a model through here, so the time Table 3 reports is the time ``mrsr upscale`` takes per pixel,
and the bf16 PSNR difference Table 3 reports is what ``upscale --bf16`` costs.

The path (:func:`prepare`, :func:`to_input`, :func:`super_resolve`): eval mode, no gradients,
channels-last weights and input (oneDNN's fast layout on CPUs, the tensor cores' on GPUs; a
(1, 1, h, w) slice is already channels-last in memory, but only a channels-last tensor makes the
convolutions keep that layout for their outputs instead of converting every feature map), forward
under ``torch.inference_mode()`` (where the proposed net folds its N branch deconvolutions into one
and, in float32 on a CPU, runs prepacked, fused oneDNN convolutions: :mod:`mrsr.models.onednn`).
``bf16`` casts the weights and the input to bfloat16; outputs come back as float32 numpy arrays.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrsr import machine
from mrsr.config import JobError, check_model
from mrsr.models import MODEL_REGISTRY, SuperResolver, build_model
from mrsr.weights import check_weights, load_model

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_for_inference(name: str, scale: int, weights: Path | None = None,
                       options: dict[str, Any] | None = None) -> tuple[SuperResolver, dict[str, Any]]:
    """(model, sidecar): trained ``weights`` of ``name`` at ``scale``, or a fresh initialisation.

    Args:
        name: registry name asked for.
        scale: scale asked for.
        weights: trained weights; their sidecar must name the same model and scale.
        options: the builder's options for a fresh initialisation (random, or bicubic's none).

    Returns:
        The model and its sidecar; without weights a sidecar of the same keys (``model``,
        ``scale``, ``strategy``: ``multi`` where the model has it, ``options``).

    Raises:
        JobError: the model lacks ``scale`` (named as ``--scale``).
        WeightsError: unusable weights, or weights of another model or scale (running them would label
            one model's output with another's name).
    """
    if weights is not None:
        model, meta = load_model(weights)
        check_weights(weights, meta, model=name, scale=scale)
        return model, meta
    strategy = "multi" if "multi" in MODEL_REGISTRY[name].strategies else None
    try:
        check_model(name, strategy, scale)
    except JobError as exc:  # the name is a registry choice, so the scale is what the model lacks
        raise JobError(f"--scale {scale}: {exc}", exc.part) from exc
    meta = {"model": name, "scale": scale, "strategy": strategy, "options": dict(options or {})}
    return build_model(name, scale, strategy, **(options or {})), meta


def prepare(model: nn.Module, dtype: str = "fp32", device: str | torch.device = "cpu") -> nn.Module:
    """The model ready for fast inference: eval, no gradients, channels-last, ``dtype`` weights.

    Args:
        model: any registered model (modified in place and returned).
        dtype: ``fp32`` or ``bf16``.
        device: where it runs.
    """
    model.eval().requires_grad_(False)
    return model.to(device=device, dtype=DTYPES[dtype], memory_format=torch.channels_last)


def to_input(lr: np.ndarray, dtype: str = "fp32", device: str | torch.device = "cpu") -> torch.Tensor:
    """(h, w) LR image -> (1, 1, h, w) channels-last tensor of ``dtype`` on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))[None, None]
    return x.to(device=device, dtype=DTYPES[dtype]).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def super_resolve(model: nn.Module, lr: torch.Tensor) -> np.ndarray:
    """(1, 1, h, w) input of :func:`to_input` -> (n*h, n*w) float32 array, by a :func:`prepare`-d model."""
    return model(lr)[0, 0].float().cpu().numpy()


def bf16_warning(device: torch.device) -> str | None:
    """Why bf16 is a bad idea on ``device`` (a CPU without bfloat16 instructions), else None."""
    if device.type == "cpu" and not machine.cpu_info()["bf16_native"]:
        return ("bf16 on a CPU without bfloat16 instructions (AMX, AVX-512 BF16): emulated, about 10 times "
                "slower than float32 here (docs/benchmarks.md)")
    return None


def _conv_radius_bound(model: nn.Module) -> int:
    """Receptive radius (input pixels) of a stack of the model's convolutions: an upper bound for
    feed-forward nets of convolutions, residual additions and pointwise operations."""
    radius = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k, d = m.kernel_size[0], m.dilation[0]
            p = m.padding[0] if not isinstance(m.padding, str) else (d * (k - 1) // 2 if m.padding == "same" else 0)
            radius += max(p, d * (k - 1) - p)
        elif isinstance(m, nn.ConvTranspose2d):
            k, p, st = m.kernel_size[0], m.padding[0], m.stride[0]
            radius += math.ceil(max(p, k - 1 - p) / st)
    return radius


def receptive_radius(model: nn.Module, scale: int, device: str | torch.device = "cpu") -> int:
    """How many input pixels either side of a pixel can change its super-resolved output.

    The larger of the convolution bound and a measurement: the gradient of the output pixels of one
    input pixel with respect to a random input strip, along rows and along columns (this also finds
    non-convolutional parts such as bicubic interpolation). A probe grows until the gradient no
    longer reaches the strip's end.

    Args:
        model: the model, on ``device``.
        scale: its scale.
        device: where it runs.
    """
    bound = _conv_radius_bound(model)
    dtype = next(model.parameters(), torch.empty(0)).dtype
    gen = torch.Generator().manual_seed(0)
    measured, size = 0, 2 * (bound + 4) + 1
    for axis in (2, 3):
        while True:
            c, shape = size // 2, [1, 1, 5, 5]
            shape[axis] = size
            x = torch.rand(shape, generator=gen, dtype=dtype).to(device).requires_grad_(True)
            with torch.enable_grad():
                out = model(x)
                idx = [slice(None), slice(None), slice(2 * scale, 3 * scale), slice(2 * scale, 3 * scale)]
                idx[axis] = slice(c * scale, (c + 1) * scale)
                # The gradient of the input only: the weights' gradients (most of a backward pass) are
                # not computed, and the model's own .grad fields are left alone.
                (grad,) = torch.autograd.grad(out[tuple(idx)].sum(), x)
            hit = (grad.abs() > 0).nonzero()[:, axis]
            reach = int((hit - c).abs().max()) if len(hit) else 0
            if reach < c or size > 4096:
                measured = max(measured, reach)
                break
            size = 2 * size + 1
    return max(bound, measured)


class Upscaler:
    """One normalised 2-D slice -> its super-resolved version, tile by tile, on the inference path.

    Args:
        model: a :class:`mrsr.models.SuperResolver` (:func:`prepare`-d in place here).
        device: torch device for the model.
        tile: tile size in input pixels (each side); slices up to this size run whole.
        overlap: context pixels on each side of a tile; None: the receptive radius plus 2.
        bf16: bfloat16 weights and activations (:func:`prepare`'s ``bf16``, what Table 3 times).
    """

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu", tile: int = 256,
                 overlap: int | None = None, bf16: bool = False) -> None:
        self.device, self.dtype = torch.device(device), "bf16" if bf16 else "fp32"
        self.scale = int(model.scale)
        if tile < 1:
            raise ValueError(f"tile must be positive, got {tile}")
        self.tile = int(tile)
        # The radius is probed in float32, before the cast: the bf16 probe's gradients could underflow.
        self.radius = receptive_radius(model.to(self.device).eval(), self.scale, self.device)
        self.overlap = self.radius + 2 if overlap is None else int(overlap)
        if self.overlap < self.radius:
            raise ValueError(
                f"overlap {self.overlap} is smaller than the model's receptive radius {self.radius}: "
                "tiles would disagree at their seams; use --overlap >= "
                f"{self.radius} (or leave it out)")
        self.model = prepare(model, self.dtype, self.device)

    def run(self, lr: np.ndarray) -> np.ndarray:
        """(h, w) -> (scale*h, scale*w) float32 in one forward pass (no tiling)."""
        sr = super_resolve(self.model, to_input(lr, self.dtype, self.device))
        expected = (self.scale * lr.shape[0], self.scale * lr.shape[1])
        if sr.shape != expected:  # never write an output labelled x{scale} at another scale
            raise RuntimeError(f"the model returned {sr.shape} for a {lr.shape} input, not x{self.scale} "
                               f"{expected}: its weights and sidecar disagree on the scale")
        return sr

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(h, w) float32 -> (scale*h, scale*w) float32."""
        h, w = image.shape
        t, o, s = self.tile, self.overlap, self.scale
        if h <= t and w <= t:
            return self.run(image)
        out = np.empty((s * h, s * w), dtype=np.float32)
        for y0 in range(0, h, t):
            y1, ya = min(y0 + t, h), max(0, y0 - o)
            yb = min(h, y1 + o)
            for x0 in range(0, w, t):
                x1, xa = min(x0 + t, w), max(0, x0 - o)
                xb = min(w, x1 + o)
                sr = self.run(image[ya:yb, xa:xb])
                out[s * y0 : s * y1, s * x0 : s * x1] = sr[
                    s * (y0 - ya) : s * (y1 - ya), s * (x0 - xa) : s * (x1 - xa)]
        return out
