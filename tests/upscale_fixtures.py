"""A small randomly initialised proposed model and its weights file, the input of the upscale tests."""

from __future__ import annotations

from pathlib import Path

import torch

from mrsr.models import SuperResolver, build_model
from mrsr.weights import save_weights

TINY = {"features": 8, "units": 2, "image_deconv_init": "bicubic"}


def tiny_model(scale: int = 2, seed: int = 0, **extra) -> SuperResolver:
    """The proposed multi-resolution net with :data:`TINY` options (and ``extra``), seeded, in eval mode."""
    torch.manual_seed(seed)
    return build_model("proposed", scale, "multi", **{**TINY, **extra}).eval()


def save_tiny_weights(path: Path) -> Path:
    """``tiny_model()`` saved at ``path`` with its sidecar, as `mrsr train` writes them."""
    save_weights(path, tiny_model(), {"model": "proposed", "scale": 2, "strategy": "multi", "options": TINY})
    return path
