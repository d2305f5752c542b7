"""FSCWN, a progressive wide residual network with fixed skip connections (Tables 2-3, x2 only).

Source: J. Shi, Z. Li, S. Ying, C. Wang, Q. Liu, Q. Zhang and P. Yan, "MR Image Super-Resolution via
Wide Residual Networks With Fixed Skip Connection", IEEE Journal of Biomedical and Health Informatics
23(3):1129-1140, 2019 (FSCWRN there; the reproduced paper's [16], "FSCWN").

What the source states (abstract; the reproduced paper's summary): the input is pre-upsampled by
interpolation; a fixed shallow network provides local details to every subsequent part of the network
through a fixed skip connection (the shallow-network-based local residual learning); progressively
wider residual networks replace a deeper one; global residual learning adds the interpolated input
to the output.

Our realisation (docs/models.md; every size is an option):
- Input: the project's MATLAB-style bicubic upsampling (:func:`mrsr.data.resize.torch_upscale`).
- Shallow network ``S = conv3x3(relu(conv3x3(x)))``, 1 -> F -> F maps (F = 64).
- B = 8 wide residual blocks, pre-activated as in wide ResNets (Zagoruyko & Komodakis, BMVC 2016)
  without batch normalisation (as in SR networks since EDSR): ``f_b(H) = conv3x3(relu(conv3x3(relu(H))))``,
  F -> w_b -> F maps. "Progressive" width: w_b = 64, 72, ..., 120 (from F to nearly 2F).
- Fixed skip connection: ``H_b = S + f_b(H_{b-1})``, ``H_0 = S``: the shallow features are added to
  the output of every block.
- Reconstruction ``r = conv3x3(relu(H_B))`` (F -> 1); global residual ``y = x + r``.
- 19 convolution layers in all (2 + 2 x 8 + 1), about the depth of the reproduced paper's own
  network, as the paper says; the per-HR-pixel cost is about 1.3 x de-CNN's, in line with its
  Table 3 (1.29 s against 1.16 s at x2).
- x2 only (``scales``), as in the reproduced paper (which attributes the restriction to 2x2
  pooling in FSCWN). We could not confirm a pooling layer from the sources available to us, so this
  network has none and would work at any scale; only its ``scales`` restricts it.
- He initialisation (the project's protocol).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.data.resize import torch_upscale
from mrsr.models.base import SuperResolver
from mrsr.models.blocks import ResidualBranch, same_conv
from mrsr.modelspec import MODEL_SPECS

DEFAULT_WIDTHS = (64, 72, 80, 88, 96, 104, 112, 120)


class FSCWN(SuperResolver):
    """Progressive wide residual network with a fixed skip connection, on a pre-upsampled input.

    Args:
        scale: integer upscaling factor n: only 2, as in the reproduced paper.
        strategy: ``None`` (FSCWN has no strategies).
        features: F, maps of the shallow network and between blocks; default 64.
        widths: inner width w_b of each wide residual block, one entry per block; default
            64, 72, ..., 120 (8 blocks).
        residual_init: ``he`` (default) or ``zero``: the reconstruction layer starts at zero, so the
            net starts as bicubic interpolation (the quick profile's choice).
    """

    spec = MODEL_SPECS["fscwn"]

    def __init__(self, scale: int, strategy: str | None = None, *, features: int = 64,
                 widths: Sequence[int] = DEFAULT_WIDTHS, residual_init: str = "he") -> None:
        super().__init__(scale, strategy)
        widths = tuple(int(w) for w in widths)
        if not widths:
            raise ValueError("widths must name at least one block")
        self.widths = widths
        self.shallow1 = same_conv(1, features, 3)
        self.shallow2 = same_conv(features, features, 3)
        # wide residual blocks f_b (F -> w_b -> F), pre-activated as in wide ResNets
        self.blocks = nn.ModuleList(ResidualBranch(features, w) for w in widths)
        self.reconstruct = same_conv(features, 1, 3)
        self.init_weights()
        self.init_residual(self.reconstruct, residual_init)

    def layer_groups(self) -> dict[str, list[nn.Module]]:
        """``body``: shallow network and wide blocks; ``last``: the reconstruction layer."""
        return {"body": [self.shallow1, self.shallow2, self.blocks], "last": [self.reconstruct]}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, n*h, n*w): bicubic upsampling of ``lr`` plus the learned residual.
        """
        x = torch_upscale(lr, self.scale)
        s = self.shallow2(F.relu(self.shallow1(x)))
        h = s
        for block in self.blocks:
            h = s + block(h)
        return x + self.reconstruct(F.relu(h))
