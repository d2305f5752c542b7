"""FSRCNN, the fast SRCNN with a deconvolution at the end (Tables 2-3; "single upsampling").

Source: C. Dong, C. C. Loy and X. Tang, "Accelerating the Super-Resolution Convolutional Neural
Network", ECCV 2016, LNCS 9906, pp. 391-407.

FSRCNN(d, s, m) = conv5x5(1 -> d) - conv1x1(d -> s) - m x conv3x3(s -> s) - conv1x1(s -> d) -
deconv9x9(d -> 1, stride n), PReLU after every convolution, all in LR space until the deconvolution.

Choices where the source is silent or where this project departs from it (docs/models.md):
- Channel-wise PReLU (one slope per map, initial slope 0.25), the PReLU of He et al. (2015) that
  FSRCNN cites; the published parameter count (12,464) counts neither PReLU slopes nor biases.
- Deconvolution padding 4 with ``output_padding = n - 1``, so a full image comes out at exactly
  n x the LR size (the published layer gives (m-1)n+1 for m LR pixels).
- He initialisation everywhere (the project's protocol) instead of the published Gaussian
  (std 0.001) initialisation of the deconvolution.
"""

from __future__ import annotations

import torch
from torch import nn

from mrsr.models.base import SuperResolver
from mrsr.models.blocks import same_conv, upsampling_deconv
from mrsr.modelspec import MODEL_SPECS


class FSRCNN(SuperResolver):
    """FSRCNN(d, s, m) with a 9x9 stride-n deconvolution at the end.

    Args:
        scale: integer upscaling factor n (the deconvolution's stride).
        strategy: ``None`` (FSRCNN has no strategies).
        features: d, maps of the feature extraction and expanding layers; published: 56.
        shrink: s, maps of the shrinking and mapping layers; published: 12.
        mapping: m, number of 3x3 mapping layers; published: 4.
        deconv_kernel: odd size of the deconvolution kernel; published: 9.
    """

    spec = MODEL_SPECS["fsrcnn"]

    def __init__(
        self,
        scale: int,
        strategy: str | None = None,
        *,
        features: int = 56,
        shrink: int = 12,
        mapping: int = 4,
        deconv_kernel: int = 9,
    ) -> None:
        super().__init__(scale, strategy)
        layers: list[nn.Module] = [
            same_conv(1, features, 5),
            nn.PReLU(features),
            same_conv(features, shrink, 1),
            nn.PReLU(shrink),
        ]
        for _ in range(mapping):
            layers += [same_conv(shrink, shrink, 3), nn.PReLU(shrink)]
        layers += [same_conv(shrink, features, 1), nn.PReLU(features)]
        self.body = nn.Sequential(*layers)
        self.deconv = upsampling_deconv(features, 1, deconv_kernel, scale)
        self.init_weights()

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """``body``: every convolution and PReLU; ``last``: the deconvolution (Dong et al.: 10 x slower)."""
        return {"body": [self.body], "last": [self.deconv]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, n*h, n*w): the deconvolution of the (B, d, h, w) LR-space features.
        """
        return self.deconv(self.body(lr))
