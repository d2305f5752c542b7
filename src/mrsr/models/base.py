"""What every super-resolution model here provides, so training, evaluation, timing and
``mrsr upscale`` treat them alike."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import nn

from mrsr.models.blocks import bicubic_deconv_kernel, he_normal_
from mrsr.modelspec import GPU_SLOTS_PER_CARD, GROUP_NAMES, HEAVY, LIGHT, ModelSpec

__all__ = ["GPU_SLOTS_PER_CARD", "GROUP_NAMES", "HEAVY", "INIT_SCHEMES", "LIGHT", "SuperResolver"]

#: Initialisation schemes of ``train.init`` (per parameter group; :meth:`SuperResolver.apply_init`).
#: ``default``: as the model builds itself (He, plus its own options such as ``residual_init``);
#: ``he``: He normal with each layer's real fan-in (:func:`mrsr.models.blocks.he_normal_`), zero
#: biases; ``gaussian``: N(0, std^2) weights (std:
#: ``train.init_std``), zero biases (SRCNN's and FSRCNN's published init); ``zero``: weights and biases
#: zero (a residual net's last layer: the net starts as its interpolation); ``bicubic``: a one-channel
#: transposed convolution set to bicubic interpolation (an ``upsample`` group only).
#: Only convolutions and transposed convolutions are (re)initialised; PReLU slopes and the proposed
#: net's fusion weights keep their constructor values.
INIT_SCHEMES = ("default", "he", "gaussian", "zero", "bicubic")


class SuperResolver(nn.Module, abc.ABC):
    """Base class: a single-channel 2-D super-resolver for one integer scale.

    Subclasses implement :meth:`forward`; models with deep supervision override
    :meth:`loss_outputs`. Inputs and outputs are intensities normalised to about [0, 1].

    Every model class takes ``(scale, strategy=None, *, <its options>)``, so the registry
    (:data:`mrsr.models.MODEL_REGISTRY`) maps a config name straight to the class. A subclass names
    its entry of :data:`mrsr.modelspec.MODEL_SPECS` (``spec = MODEL_SPECS["srcnn"]``), from which
    it takes the class attributes below: what it supports is stated once, torch-free.

    Args:
        scale: the integer upscaling factor the model is built for; one of :attr:`scales`.
        strategy: one of :attr:`strategies` (``None`` for models without strategies).

    Raises:
        ValueError: a scale or strategy the class does not support.
    """

    #: its entry of the model spec; the four attributes below are copied from it.
    spec: ClassVar[ModelSpec]
    #: the scales the model is defined for (the config and the constructor refuse others).
    scales: ClassVar[tuple[int, ...]]
    #: the strategies of Table 1 it has; ``(None,)`` for models without strategies.
    strategies: ClassVar[tuple[str | None, ...]]
    #: the names :meth:`param_groups` returns (empty: no learned parameters, no training job).
    groups: ClassVar[tuple[str, ...]]
    #: its share of one GPU when training jobs share a card: :data:`LIGHT` or :data:`HEAVY`.
    gpu_slots: ClassVar[int]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.scales, cls.strategies, cls.groups, cls.gpu_slots = spec.scales, spec.strategies, spec.groups, spec.gpu_slots

    def __init__(self, scale: int, strategy: str | None = None) -> None:
        super().__init__()
        if scale not in self.scales:
            raise ValueError(f"{type(self).__name__} supports scales {self.scales}, not {scale}")
        if strategy not in self.strategies:
            raise ValueError(f"{type(self).__name__} supports strategies {self.strategies}, not {strategy!r}")
        self.scale = int(scale)
        self.strategy = strategy

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

    def layer_groups(self) -> dict[str, list[nn.Module | nn.Parameter | None]]:
        """The modules (or bare parameters) of each named group, keys exactly :attr:`groups`.

        Subclasses override it; ``None`` members (a layer a strategy does not have) are skipped.
        The default puts the whole model in ``body``.
        """
        return {"body": [self]}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters by named group (keys :attr:`groups`), each parameter in exactly one.

        ``train.param_groups`` gives a learning-rate multiplier per name (e.g. ``{last: 0.1}``:
        SRCNN's 1e-5 last layer under a 1e-4 body); :func:`mrsr.train.make_optimizer` builds one
        optimiser group per non-empty name.
        """
        groups: dict[str, list[nn.Parameter]] = {}
        for name, members in self.layer_groups().items():
            params: list[nn.Parameter] = []
            for member in members:
                if member is None:
                    continue
                params.extend([member] if isinstance(member, nn.Parameter) else member.parameters())
            groups[name] = params
        return groups

    def apply_init(self, init: Mapping[str, str], std: float = 1e-3) -> None:
        """Re-initialise groups per ``train.init``: ``{all | GROUP: SCHEME}`` (:data:`INIT_SCHEMES`).

        ``all`` is applied first, then each named group, so ``{all: gaussian, upsample: bicubic}``
        means "Gaussian everywhere but the upsampling". ``default`` leaves a group as built.

        Raises:
            ValueError: an unknown group or scheme, or ``bicubic`` on a layer that is not a
                one-channel transposed convolution.
        """
        groups = self.layer_groups()
        for key, scheme in sorted(init.items(), key=lambda item: item[0] != "all"):
            if scheme not in INIT_SCHEMES:
                raise ValueError(f"init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
            if key != "all" and key not in groups:
                raise ValueError(f"{type(self).__name__} has no parameter group {key!r}; groups: {', '.join(groups)}")
            if scheme == "default":
                continue
            members = [m for ms in groups.values() for m in ms] if key == "all" else groups[key]
            for member in members:
                if isinstance(member, nn.Module):
                    for layer in member.modules():
                        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                            self._init_layer(layer, scheme, std, key)

    def _init_layer(self, layer: nn.Conv2d | nn.ConvTranspose2d, scheme: str, std: float, group: str) -> None:
        with torch.no_grad():
            if scheme == "he":
                he_normal_(layer)
            elif scheme == "gaussian":
                nn.init.normal_(layer.weight, 0.0, std)
            elif scheme == "zero":
                nn.init.zeros_(layer.weight)
            elif scheme == "bicubic":
                if not (isinstance(layer, nn.ConvTranspose2d) and layer.weight.shape[:2] == (1, 1)
                        and layer.stride == (self.scale, self.scale)):
                    raise ValueError(f"init 'bicubic' needs one-channel transposed convolutions of stride "
                                     f"{self.scale}; group {group!r} of {type(self).__name__} has {layer}")
                layer.weight.copy_(bicubic_deconv_kernel(self.scale, layer.weight.shape[-1]))
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

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
        """He (Kaiming) normal initialisation of every convolution and transposed convolution, zero
        biases (the paper's [24]), with each layer's real fan-in (:func:`mrsr.models.blocks.he_normal_`)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                he_normal_(module)
