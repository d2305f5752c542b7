"""What every super-resolution model here provides, so training, evaluation, timing and
``mrsr upscale`` treat them alike."""

from __future__ import annotations

import abc

import torch
from torch import nn


class SuperResolver(nn.Module, abc.ABC):
    """Base class: a single-channel 2-D super-resolver for one integer scale.

    Subclasses implement :meth:`forward`; models with deep supervision override
    :meth:`loss_outputs`. Inputs and outputs are intensities normalised to about [0, 1].

    Args:
        scale: the integer upscaling factor the model is built for.
    """

    #: whether the model has trainable parameters (bicubic has none).
    trainable: bool = True

    def __init__(self, scale: int) -> None:
        super().__init__()
        if scale < 2:
            raise ValueError(f"scale must be >= 2, got {scale}")
        self.scale = int(scale)

    @abc.abstractmethod
    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve.

        Args:
            lr: (B, 1, h, w) low-resolution images.
        Returns:
            (B, 1, scale*h, scale*w) estimate of the high-resolution images.
        """

    def loss_outputs(self, lr: torch.Tensor) -> list[torch.Tensor]:
        """Every output that enters the training loss, each (B, 1, scale*h, scale*w).

        The loss is the sum over these of 1/2 * mean squared error to the target (eqs. 5-7 of the
        paper for the proposed net; a single term for every other model).
        """
        return [self(lr)]

    @staticmethod
    def init_residual(layer: nn.Module, how: str) -> None:
        """``how='zero'``: zero a residual net's last layer so it starts as its interpolation."""
        if how not in ("he", "zero"):
            raise ValueError(f"residual_init must be 'he' or 'zero', got {how!r}")
        if how == "zero":
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def init_weights(self) -> None:
        """He (Kaiming) normal initialisation of every convolution, zero biases (the paper's [24])."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
