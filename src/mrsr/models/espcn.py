"""ESPCN, the efficient sub-pixel CNN (Tables 2-3; pixel shuffle at the end).

Source: W. Shi, J. Caballero, F. Huszar, J. Totz, A. P. Aitken, R. Bishop, D. Rueckert and Z. Wang,
"Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural
Network", CVPR 2016, pp. 1874-1883.

Three layers in LR space, (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3 with n^2 output maps, then a
periodic shuffle (``nn.PixelShuffle``) to the HR grid.

Choices where the source is silent or where this project departs from it (docs/models.md):
- Activation: tanh by default, as published (Shi et al. chose tanh over ReLU for their final model
  from their experiments); ``activation="relu"`` is an option. We keep tanh because Tables 2-3
  compare against ESPCN as published, and the reproduced paper does not say it changed anything.
- 'same' zero padding, so a full image comes out at exactly n x the LR size.
- He initialisation (the project's protocol for every model); the source does not state its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mrsr.models.base import SuperResolver
from mrsr.models.blocks import three_conv_layers
from mrsr.modelspec import MODEL_SPECS

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


class ESPCN(SuperResolver):
    """ESPCN 5-3-3 with a sub-pixel convolution (pixel shuffle) output layer.

    Args:
        scale: integer upscaling factor n; the last layer has n^2 maps.
        strategy: ``None`` (ESPCN has no strategies).
        features: maps of the first two layers (n1, n2); published: (64, 32).
        kernel_sizes: odd kernel sizes (f1, f2, f3); published: (5, 3, 3).
        activation: ``tanh`` (published) or ``relu``; no activation after the last layer.
    """

    spec = MODEL_SPECS["espcn"]

    def __init__(
        self,
        scale: int,
        strategy: str | None = None,
        *,
        features: Sequence[int] = (64, 32),
        kernel_sizes: Sequence[int] = (5, 3, 3),
        activation: str = "tanh",
    ) -> None:
        super().__init__(scale, strategy)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.conv1, self.conv2, self.conv3 = three_conv_layers(features, kernel_sizes, scale * scale)
        self.shuffle = nn.PixelShuffle(scale)
        self.init_weights()

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """``body``: the two hidden layers; ``last``: the sub-pixel convolution (n^2 maps)."""
        return {"body": [self.conv1, self.conv2], "last": [self.conv3]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, n*h, n*w): the (B, n^2, h, w) last-layer maps rearranged onto the HR grid.
        """
        act = ACTIVATIONS[self.activation]
        x = act(self.conv1(lr))
        x = act(self.conv2(x))
        return self.shuffle(self.conv3(x))
