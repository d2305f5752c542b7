"""SRCNN, the three-layer super-resolution CNN of Tables 2-3 (pre-upsampled input).

Source: C. Dong, C. C. Loy, K. He and X. Tang, "Learning a Deep Convolutional Network for Image
Super-Resolution", ECCV 2014, LNCS 8692, pp. 184-199; and "Image Super-Resolution Using Deep
Convolutional Networks", IEEE TPAMI 38(2):295-307, 2016.

Choices where the source is silent or where this project departs from it (docs/models.md):
- 'same' zero padding in every layer, so the output has exactly the size of the pre-upsampled input
  (the published network uses no padding and returns a smaller, border-cropped image).
- The input is upsampled with the project's MATLAB-style bicubic (:func:`mrsr.data.resize.torch_upscale`),
  the same interpolation that made the LR images, as the paper does with MATLAB ``imresize``.
- He initialisation (the project's protocol for every model) instead of the published Gaussian
  (std 0.001) initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.data.resize import torch_upscale
from mrsr.models.base import SuperResolver
from mrsr.models.blocks import three_conv_layers
from mrsr.modelspec import MODEL_SPECS


class SRCNN(SuperResolver):
    """SRCNN 9-1-5: patch extraction, non-linear mapping, reconstruction, all in HR space.

    ``y = conv_5x5(relu(conv_1x1(relu(conv_9x9(bicubic(x))))))`` with 64 and 32 maps.

    Args:
        scale: integer upscaling factor n.
        strategy: ``None`` (SRCNN has no strategies).
        features: maps of the first two layers (n1, n2); published: (64, 32).
        kernel_sizes: odd kernel sizes of the three layers (f1, f2, f3); published: (9, 1, 5).
    """

    spec = MODEL_SPECS["srcnn"]

    def __init__(
        self,
        scale: int,
        strategy: str | None = None,
        *,
        features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (9, 1, 5),
    ) -> None:
        super().__init__(scale, strategy)
        self.extract, self.mapping, self.reconstruct = three_conv_layers(features, kernel_sizes, 1)
        self.init_weights()

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """``body``: the first two layers; ``last``: the reconstruction (Dong et al.: 10 x slower)."""
        return {"body": [self.extract, self.mapping], "last": [self.reconstruct]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, n*h, n*w): the network applied to the bicubic-upsampled input.
        """
        x = torch_upscale(lr, self.scale)
        return self.reconstruct(F.relu(self.mapping(F.relu(self.extract(x)))))
