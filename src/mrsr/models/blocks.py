"""Layers and kernels that more than one model here is built from (one place for each).

- :func:`same_conv`: an odd-kernel convolution with 'same' zero padding (every model's convolutions).
- :func:`upsampling_deconv`: a stride-n transposed convolution whose output is exactly n x its input
  (FSRCNN's last layer, de-CNN's learned interpolation, both deconvolutions of the proposed net).
- :func:`bicubic_deconv_kernel` and :func:`bicubic_support_kernel`: the weights and the size of such a
  deconvolution when it is to start as bicubic interpolation (de-CNN, the proposed net, and
  ``train.init: {upsample: bicubic}`` for any model with an ``upsample`` group).
- :class:`ResidualBranch`: two pre-activated 3x3 convolutions, the residual branch of the proposed
  net's units (eq. 2) and of FSCWN's wide residual blocks.
- :func:`he_normal_`: the He initialisation of every convolution and transposed convolution, with the
  fan-in counted from the right dimension (:func:`fan_in`).

These build plain ``nn.Conv2d``/``nn.ConvTranspose2d`` layers or a module with ``conv1``/``conv2``, so
the models' ``state_dict`` keys (and saved weights) are the same as when each model built its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.data.resize import cubic


def fan_in(layer: nn.Conv2d | nn.ConvTranspose2d) -> float:
    """How many weighted inputs sum into one output value of ``layer``: He et al.'s n_l.

    A convolution: in_channels/groups x kh x kw. A stride-s transposed convolution scatters each input
    pixel over a k x k window with step s, so an output pixel gathers, on average over its s x s
    phases, (in_channels/groups) x (kh/sh) x (kw/sw) inputs. ``torch.nn.init.kaiming_normal_`` counts
    neither right for a transposed convolution: its weight is (in, out/groups, kh, kw) and it takes
    dimension 1 (the *output* maps) as the fan-in, ignoring the stride. For the proposed net's feature
    deconvolution (128 maps in, 1 out, 9 x 9, stride 2) that is 81 instead of 2592: std 0.157 instead
    of 0.028 (5.7 x too large); for its image deconvolution (1 in, 1 out) 81 instead of 20.25 (2 x
    too small).
    """
    kh, kw = layer.kernel_size
    maps = layer.in_channels // layer.groups
    if isinstance(layer, nn.ConvTranspose2d):
        sh, sw = layer.stride
        return maps * (kh / sh) * (kw / sw)
    return float(maps * kh * kw)


def he_std(layer: nn.Conv2d | nn.ConvTranspose2d) -> float:
    """He et al. (2015)'s standard deviation for a layer followed by ReLU: sqrt(2 / fan-in)."""
    return math.sqrt(2.0) / math.sqrt(fan_in(layer))


def he_normal_(layer: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """He normal initialisation of ``layer`` (N(0, 2 / fan-in), :func:`fan_in`) and zero bias.

    For a convolution this is exactly ``kaiming_normal_(mode="fan_in", nonlinearity="relu")`` (same
    std, same random draws), so the convolutions' starts are unchanged; transposed convolutions get
    their real fan-in.
    """
    with torch.no_grad():
        layer.weight.normal_(0.0, he_std(layer))
        if layer.bias is not None:
            layer.bias.zero_()


def same_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Conv2d:
    """A ``kernel`` x ``kernel`` convolution with zero padding ``kernel // 2`` (output size = input size).

    Args:
        in_channels: maps in.
        out_channels: maps out.
        kernel: odd kernel size (an even one cannot keep the size with symmetric padding).

    Raises:
        ValueError: ``kernel`` is even.
    """
    if kernel % 2 == 0:
        raise ValueError(f"kernel sizes must be odd for 'same' padding, got {kernel}")
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2)


def three_conv_layers(features: Sequence[int], kernel_sizes: Sequence[int],
                      out_channels: int) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
    """The three 'same' convolutions of SRCNN and ESPCN: 1 -> n1 -> n2 -> ``out_channels`` maps.

    Args:
        features: maps of the first two layers (n1, n2).
        kernel_sizes: odd kernel sizes of the three layers (f1, f2, f3).
        out_channels: maps of the last layer (1 for SRCNN, n^2 for ESPCN's sub-pixel layer).
    """
    n1, n2 = (int(f) for f in features)
    f1, f2, f3 = (int(k) for k in kernel_sizes)
    return same_conv(1, n1, f1), same_conv(n1, n2, f2), same_conv(n2, out_channels, f3)


def upsampling_deconv(in_channels: int, out_channels: int, kernel: int, scale: int) -> nn.ConvTranspose2d:
    """A stride-``scale`` transposed convolution that maps an h x w input to exactly scale*h x scale*w.

    Padding (k-1)/2 centres the kernel (FSRCNN's geometry, which gives (h-1)n+1 rows); the extra
    ``output_padding = n - 1`` adds the last n - 1 rows and columns, so a full image comes out at n x
    the LR size.

    Args:
        in_channels: maps in.
        out_channels: maps out.
        kernel: odd kernel size (the models' ``deconv_kernel`` option).
        scale: the stride n.

    Raises:
        ValueError: ``kernel`` is even.
    """
    if kernel % 2 == 0:
        raise ValueError(f"deconv_kernel must be odd, got {kernel}")
    return nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=scale, padding=(kernel - 1) // 2,
                              output_padding=scale - 1)


def bicubic_deconv_kernel(scale: int, kernel: int) -> torch.Tensor:
    """A (1, 1, k, k) transposed-convolution kernel that performs bicubic interpolation.

    LR pixel i lies at HR coordinate (i + 0.5) n - 0.5 (imresize geometry); the transposed
    convolution puts tap k of LR pixel i on HR pixel i n - p + k. Taps beyond the kernel are
    truncated (x4 with a 9x9 kernel), and each output phase is renormalised to sum to one.

    Args:
        scale: the deconvolution's stride n.
        kernel: its odd kernel size k (padding (k-1)/2, as :func:`upsampling_deconv`).
    """
    pad = (kernel - 1) // 2
    taps = np.arange(kernel)
    g = cubic((taps - pad - (scale - 1) / 2) / scale)
    for phase in range(scale):
        sel = (taps % scale) == phase
        total = g[sel].sum()
        if total != 0:
            g[sel] /= total
    return torch.as_tensor(np.outer(g, g), dtype=torch.float32)[None, None]


def bicubic_support_kernel(scale: int) -> int:
    """Smallest odd transposed-convolution kernel that holds the whole bicubic kernel at ``scale``.

    With padding (k-1)/2 the taps sit at HR offsets d - (n-1)/2 from an LR sample (d = -p..p); the
    bicubic kernel is non-zero for offsets within (-2n, 2n), so p is the largest d < 2n + (n-1)/2.
    9, 13, 19 for x2, x3, x4.
    """
    pad = math.ceil(2 * scale + (scale - 1) / 2) - 1
    return 2 * pad + 1


class ResidualBranch(nn.Module):
    """Two pre-activated 3x3 convolutions, ``conv2(relu(conv1(relu(h))))``, F -> width -> F maps.

    The residual branch f of the proposed net's units (``U_i = U_0 + f(U_{i-1})``, width F) and of
    FSCWN's wide residual blocks (``H_b = S + f_b(H_{b-1})``, width w_b). Both add a fixed skip (U_0,
    S) rather than the branch's own input, which is why the addition is left to the model.

    Args:
        features: maps in and out (F).
        width: maps of the inner layer; ``None`` for F (no widening).
    """

    def __init__(self, features: int, width: int | None = None) -> None:
        super().__init__()
        width = features if width is None else width
        self.conv1 = same_conv(features, width, 3)
        self.conv2 = same_conv(width, features, 3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, F, H, W) -> (B, F, H, W)."""
        return self.conv2(F.relu(self.conv1(F.relu(h))))
