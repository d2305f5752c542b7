"""The multi-resolution learning CNN for MR super-resolution (the paper reproduced here).

Three stages, all in LR space until the last layer (docs/paper-reading.md, eqs. 1-7):

1. Feature extraction: ``U0 = conv3x3(x)`` (1 -> F maps), then N residual units, each two 3x3
   convolutions: ``U_i = U0 + conv(conv(U_{i-1}))``.
2. Multi-resolution upsampling: one transposed convolution upsamples every ``U_i`` and a second one
   the LR image: ``y_i = dec(U_i) + dec_x(x)``.
3. Multi-resolution learning: ``y_hat = sum_i w_i y_i``; loss ``sum_i L_i + L_sum`` (deep supervision).

Choices where the paper is silent (docs/models.md):
- Pre-activation ReLU inside each unit (DRRN/VDSR style): ``conv(relu(conv(relu(U))))``.
- The fusion weights ``w_i`` are free scalars initialised to 1/N (no softmax).
- ``dec`` is shared by all branches (the paper's single deconvolution layer): (N+1) inputs, N outputs.
- The deconvolution follows FSRCNN: kernel 9, stride n, padding 4, so an m x m LR patch gives
  (m-1)n+1 HR pixels; at full-image inference ``output_padding = n - 1`` adds the last n - 1 rows and
  columns, so the output is exactly n x the LR size (training crops them away, as the paper's
  patch sizes 27/28/29 imply).
- Optional initialisations for short runs (config ``model.proposed``): ``image_deconv_init: bicubic``
  starts ``dec_x`` as bicubic interpolation and ``feature_deconv_init: zero`` starts the feature
  branch at zero, so the net starts at bicubic quality and learns the residual. The paper's protocol
  uses He initialisation everywhere.

Strategies of Table 1: ``single`` (one deconvolution of U_N, FSRCNN style), ``double`` (single plus
the upsampled LR image), ``multi`` (the proposed scheme).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mrsr.models import onednn
from mrsr.models.base import SuperResolver
from mrsr.models.blocks import ResidualBranch, bicubic_deconv_kernel, same_conv, upsampling_deconv
from mrsr.modelspec import MODEL_SPECS


class MultiResolutionSR(SuperResolver):
    """The proposed network.

    Args:
        scale: upscaling factor n.
        strategy: ``single``, ``double`` or ``multi`` (Table 1).
        features: feature maps per layer (paper: 128).
        units: residual units N (paper: 9).
        deconv_kernel: odd size of the deconvolution kernel (paper/FSRCNN: 9).
        image_deconv_init: ``he`` (paper) or ``bicubic``.
        feature_deconv_init: ``he`` (paper) or ``zero``.
    """

    spec = MODEL_SPECS["proposed"]

    def __init__(
        self,
        scale: int,
        strategy: str = "multi",
        *,
        features: int = 128,
        units: int = 9,
        deconv_kernel: int = 9,
        image_deconv_init: str = "he",
        feature_deconv_init: str = "he",
    ) -> None:
        super().__init__(scale, strategy)
        self.units = units
        self.entry = same_conv(1, features, 3)
        # the residual units' branches (eq. 2): U_i = U_0 + branch_i(U_{i-1})
        self.body = nn.ModuleList(ResidualBranch(features) for _ in range(units))
        self.feature_deconv = upsampling_deconv(features, 1, deconv_kernel, scale)
        self.image_deconv = upsampling_deconv(1, 1, deconv_kernel, scale) if strategy != "single" else None
        self.branch_weights = nn.Parameter(torch.full((units,), 1.0 / units)) if strategy == "multi" else None
        self._packed: onednn.PackedConvs | None = None  # CPU inference: prepacked weights (not state)
        self.init_weights()
        if self.image_deconv is not None and image_deconv_init == "bicubic":
            with torch.no_grad():
                self.image_deconv.weight.copy_(bicubic_deconv_kernel(scale, deconv_kernel))
        if feature_deconv_init == "zero":
            nn.init.zeros_(self.feature_deconv.weight)

    def layer_groups(self) -> dict[str, list[nn.Module | nn.Parameter | None]]:
        """``body``: entry conv and residual units; ``last``: the feature deconvolution; ``upsample``:
        the image deconvolution (empty for ``single``); ``fusion``: the w_i (empty but for ``multi``)."""
        return {"body": [self.entry, self.body], "last": [self.feature_deconv], "upsample": [self.image_deconv],
                "fusion": [self.branch_weights]}

    def features(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """(B, 1, h, w) -> [U_1, ..., U_N], each (B, F, h, w)."""
        u0 = self.entry(lr)
        outs, u = [], u0
        for unit in self.body:
            u = u0 + unit(u)
            outs.append(u)
        return outs

    def branches(self, lr: torch.Tensor) -> torch.Tensor:
        """The N branch outputs y_i of eq. 3 as one tensor (N, B, 1, n*h, n*w).

        All N deconvolutions run as one batched call.
        """
        feats = self.features(lr)
        b = lr.shape[0]
        up = self.feature_deconv(torch.cat(feats, dim=0))
        up = up.view(len(feats), b, *up.shape[1:])
        return up + self.image_deconv(lr).unsqueeze(0)

    def loss_outputs(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """[y_1, ..., y_N, y_hat] for ``multi``; [y] otherwise. Each (B, 1, n*h, n*w)."""
        if self.strategy != "multi":
            return [self(lr)]
        ys = self.branches(lr)
        fused = torch.einsum("n,nbchw->bchw", self.branch_weights, ys)
        return [*ys.unbind(0), fused]

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) -> (B, 1, n*h, n*w).

        For ``multi`` the N deconvolutions are folded into one: ``sum_i w_i (dec(U_i) + dec_x(x)) =
        dec(sum_i w_i U_i) + (sum_i w_i) dec_x(x)``, exact because the deconvolution is linear.
        """
        if not torch.is_grad_enabled():
            return self._infer(lr)
        if self.strategy == "single":
            return self.feature_deconv(self.features(lr)[-1])
        if self.strategy == "double":
            return self.feature_deconv(self.features(lr)[-1]) + self.image_deconv(lr)
        w = self.branch_weights
        # Accumulate sum_i w_i U_i on the fly: the N feature maps are never held at once.
        u0 = self.entry(lr)
        u, fused_features = u0, None
        for i, unit in enumerate(self.body):
            u = u0 + unit(u)
            fused_features = w[i] * u if fused_features is None else fused_features + w[i] * u
        total = w.sum()
        bias = self.feature_deconv.bias
        up = F.conv_transpose2d(
            fused_features,
            self.feature_deconv.weight,
            bias * total if bias is not None else None,
            stride=self.feature_deconv.stride,
            padding=self.feature_deconv.padding,
            output_padding=self.feature_deconv.output_padding,
        )
        return up + total * self.image_deconv(lr)

    def _infer(self, lr: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without autograd (evaluation, timing, upscale): the same maths, folded.

        Every intermediate is updated in place (ReLU, the skip addition, the weighted sum), so a
        forward allocates a handful of feature maps instead of five per unit; the fusion weights are
        Python floats, so the sum is one ``add_`` per unit. In float32 CPU inference the units'
        convolutions run with prepacked weights and the ReLU and skip addition fused into them
        (:mod:`mrsr.models.onednn`).
        """
        multi = self.strategy == "multi"
        w = self.branch_weights.tolist() if multi else []
        u0 = self.entry(lr)
        packed = None
        if onednn.usable(u0):
            if self._packed is None:
                self._packed = onednn.PackedConvs([c for unit in self.body for c in (unit.conv1, unit.conv2)])
            packed = self._packed.weights(u0)
        u, fused = u0, None
        for i, unit in enumerate(self.body):
            if packed is not None:
                h = onednn.conv(unit.conv1, packed[2 * i], F.relu(u), relu=True)
                u = onednn.conv_add(unit.conv2, packed[2 * i + 1], h, u0)
            else:
                h = unit.conv1(F.relu(u))
                u = unit.conv2(h.relu_()).add_(u0)
            if multi:
                fused = u * w[i] if fused is None else fused.add_(u, alpha=w[i])
        total = sum(w) if multi else 1.0
        deconv = self.feature_deconv
        up = F.conv_transpose2d(
            fused if multi else u,
            deconv.weight,
            deconv.bias * total if deconv.bias is not None else None,
            stride=deconv.stride,
            padding=deconv.padding,
            output_padding=deconv.output_padding,
        )
        return up if self.image_deconv is None else up.add_(self.image_deconv(lr), alpha=total)
