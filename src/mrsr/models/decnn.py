"""de-CNN, a residual CNN in HR space whose input is upsampled by a learned deconvolution (Tables 2-3).

Source: O. Oktay, W. Bai, M. Lee, R. Guerrero, K. Kamnitsas, J. Caballero, A. de Marvao, S. Cook,
D. O'Regan and D. Rueckert, "Multi-input Cardiac Image Super-Resolution Using Convolutional Neural
Networks", MICCAI 2016, LNCS 9902, pp. 246-254 (the single-image network; the reproduced paper's
[13-14], which it describes as a residual CNN "bearing similarities to VDSR" whose input is
pre-amplified by deconvolution).

``y = u + body(u)``, ``u = deconv(x)``: a single-channel transposed convolution upsamples the LR image
to the HR grid (a learned interpolation), then a VDSR-style plain stack of 3x3 convolutions with ReLU
learns the residual to the HR image.

Choices where the sources are silent (docs/models.md); each is an option:
- Depth and width: 20 convolution layers of 64 maps after the deconvolution (VDSR's configuration,
  Kim et al., CVPR 2016). The reproduced paper calls de-CNN VDSR-like and "about the same network
  depth" as its own 20-layer network, and its Table 3 times are consistent with this: nearly constant
  over scales (all work in HR space) and close to those of its own x2 model, whose per-HR-pixel cost
  is about the same (19 layers x 128^2 maps at a quarter of the pixels).
- The deconvolution is single-channel (image in, image out), so the residual is defined relative to
  an upsampled image as in VDSR; kernel stride n, odd size, padding (k-1)/2, ``output_padding = n-1``
  (exactly n x the LR size; :func:`mrsr.models.blocks.upsampling_deconv`). Default kernel size: the
  smallest odd size that holds the whole bicubic kernel at that scale (9, 13, 19 for x2, x3, x4;
  :func:`mrsr.models.blocks.bicubic_support_kernel`).
- The deconvolution starts as bicubic interpolation (``deconv_init="bicubic"``, default) and is then
  learned: with it the residual branch starts from the interpolated image, the premise of residual
  learning; ``deconv_init="he"`` gives the project's He initialisation to this layer as well. Away
  from the borders the bicubic start equals :func:`mrsr.data.resize.torch_upscale` exactly (it has
  zero padding, not mirror padding, at the borders).
- Every other layer has He initialisation (the project's protocol).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.models.base import SuperResolver
from mrsr.models.blocks import bicubic_deconv_kernel, bicubic_support_kernel, same_conv, upsampling_deconv
from mrsr.modelspec import MODEL_SPECS

DECONV_INITS = ("bicubic", "he")


class DeCNN(SuperResolver):
    """Learned deconvolution upsampling followed by a residual VDSR-style CNN in HR space.

    Args:
        scale: integer upscaling factor n (the deconvolution's stride).
        strategy: ``None`` (de-CNN has no strategies).
        features: maps of every hidden convolution; default 64.
        layers: number of 3x3 convolutions after the deconvolution (>= 2); default 20.
        deconv_kernel: odd deconvolution kernel size; ``None`` picks :func:`bicubic_support_kernel`.
        deconv_init: ``bicubic`` (default) or ``he``, the deconvolution's initial weights.
        residual_init: ``he`` (default) or ``zero``: the last convolution starts at zero, so the
            net starts as its interpolation and learns the residual (the quick profile's choice, as
            for the proposed net's feature branch; a few CPU minutes cannot undo a random residual).
    """

    spec = MODEL_SPECS["decnn"]

    def __init__(
        self,
        scale: int,
        strategy: str | None = None,
        *,
        features: int = 64,
        layers: int = 20,
        deconv_kernel: int | None = None,
        deconv_init: str = "bicubic",
        residual_init: str = "he",
    ) -> None:
        super().__init__(scale, strategy)
        if layers < 2:
            raise ValueError(f"layers must be >= 2, got {layers}")
        if deconv_init not in DECONV_INITS:
            raise ValueError(f"deconv_init must be one of {DECONV_INITS}, got {deconv_init!r}")
        kernel = bicubic_support_kernel(scale) if deconv_kernel is None else int(deconv_kernel)
        self.deconv = upsampling_deconv(1, 1, kernel, scale)
        convs = [same_conv(1, features, 3)]
        convs += [same_conv(features, features, 3) for _ in range(layers - 2)]
        convs.append(same_conv(features, 1, 3))
        self.body = nn.ModuleList(convs)
        self.init_weights()
        if deconv_init == "bicubic":
            with torch.no_grad():
                self.deconv.weight.copy_(bicubic_deconv_kernel(scale, kernel))
        self.init_residual(self.body[-1], residual_init)

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """``upsample``: the deconvolution; ``body``: the hidden convolutions; ``last``: the residual's."""
        return {"upsample": [self.deconv], "body": list(self.body[:-1]), "last": [self.body[-1]]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, n*h, n*w): ``u + body(u)`` with ``u`` the (B, 1, n*h, n*w) deconvolved input.
        """
        u = self.deconv(lr)
        x = u
        for conv in self.body[:-1]:
            x = F.relu(conv(x))
        return u + self.body[-1](x)
