"""Bicubic interpolation (MATLAB ``imresize`` style), the baseline row of Tables 2-3."""

from __future__ import annotations

import torch

from mrsr.data.resize import torch_upscale
from mrsr.models.base import SuperResolver
from mrsr.modelspec import MODEL_SPECS


class Bicubic(SuperResolver):
    """Parameter-free bicubic upscaling with Keys' kernel (a = -0.5), mirror boundaries.

    Args:
        scale: integer upscaling factor (2, 3 or 4).
        strategy: ``None`` (bicubic has no strategies and no options).
    """

    spec = MODEL_SPECS["bicubic"]

    def layer_groups(self) -> dict:
        """No parameters, no groups."""
        return {}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) -> (B, 1, scale*h, scale*w)."""
        return torch_upscale(lr, self.scale)
