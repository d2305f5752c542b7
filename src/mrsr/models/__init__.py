"""The model registry: config name -> builder. An explicit dict, no import magic.

Every builder takes ``scale`` and ``strategy`` (None for models without strategies) plus the model's
own options from the config (``model.<name>``) and returns a :class:`SuperResolver`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mrsr.models.base import SuperResolver
from mrsr.models.bicubic import Bicubic
from mrsr.models.decnn import DeCNN
from mrsr.models.espcn import ESPCN
from mrsr.models.fscwn import FSCWN
from mrsr.models.fsrcnn import FSRCNN
from mrsr.models.proposed import STRATEGIES, MultiResolutionSR
from mrsr.models.srcnn import SRCNN


# GPU sharing (README, "GPU machines"): `snakemake --resources gpu_slots=8` runs training jobs
# side by side on one card while their slots sum to at most 8. The weights follow the cost per patch
# (docs/models.md): the proposed net, de-CNN and FSCWN need about 100 times the FLOPs of SRCNN, FSRCNN
# and ESPCN. On an H100 the proposed net at batch 128 reaches 13% of the bf16 peak even with CUDA
# graphs, so two heavy jobs still fit a card; a light job is bound by its host thread (ESPCN x2:
# 78,458 samples/s with kernels too small to fill the GPU), so eight can overlap.
GPU_SLOTS_PER_CARD = 8
LIGHT, HEAVY = 1, 4


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered model, and what it supports.

    Args:
        builder: callable(scale, strategy, **options) -> SuperResolver.
        scales: scales the model is defined for.
        strategies: allowed strategies; ``(None,)`` for models without them.
        paper: the publication the model comes from.
        gpu_slots: its share of one GPU when training jobs share a card (Snakemake resource
            ``gpu_slots`` of rule ``train``; a card has :data:`GPU_SLOTS_PER_CARD`).
        groups: the model class's parameter-group names (``SuperResolver.GROUPS``), which
            ``train.param_groups`` and ``train.init`` may name (checked by :mod:`mrsr.config`).
    """

    builder: Callable[..., SuperResolver]
    scales: tuple[int, ...] = (2, 3, 4)
    strategies: tuple[str | None, ...] = (None,)
    paper: str = ""
    gpu_slots: int = LIGHT
    groups: tuple[str, ...] = ()




def _bicubic(scale: int, strategy: str | None = None, **_: Any) -> SuperResolver:
    return Bicubic(scale)


def _proposed(scale: int, strategy: str | None = "multi", **options: Any) -> SuperResolver:
    return MultiResolutionSR(scale, strategy or "multi", **options)


def _srcnn(scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    return SRCNN(scale, **options)


def _fsrcnn(scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    return FSRCNN(scale, **options)


def _espcn(scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    return ESPCN(scale, **options)


def _decnn(scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    return DeCNN(scale, **options)


def _fscwn(scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    return FSCWN(scale, **options)


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "bicubic": ModelSpec(_bicubic, groups=Bicubic.GROUPS, paper="Keys, IEEE TASSP 1981 (MATLAB imresize)"),
    "proposed": ModelSpec(
        _proposed,
        groups=MultiResolutionSR.GROUPS,
        strategies=STRATEGIES,
        gpu_slots=HEAVY,
        paper="Multi-resolution learning CNN for MR super-resolution (this reproduction's paper)",
    ),
    "srcnn": ModelSpec(
        _srcnn,
        groups=SRCNN.GROUPS,
        paper="Dong, Loy, He, Tang: Image super-resolution using deep convolutional networks, "
        "ECCV 2014 / IEEE TPAMI 38(2):295-307, 2016",
    ),
    "fsrcnn": ModelSpec(
        _fsrcnn,
        groups=FSRCNN.GROUPS,
        paper="Dong, Loy, Tang: Accelerating the super-resolution convolutional neural network, ECCV 2016",
    ),
    "espcn": ModelSpec(
        _espcn,
        groups=ESPCN.GROUPS,
        paper="Shi et al.: Real-time single image and video super-resolution using an efficient "
        "sub-pixel convolutional neural network, CVPR 2016",
    ),
    "decnn": ModelSpec(
        _decnn,
        groups=DeCNN.GROUPS,
        gpu_slots=HEAVY,
        paper="Oktay et al.: Multi-input cardiac image super-resolution using convolutional neural "
        "networks, MICCAI 2016",
    ),
    "fscwn": ModelSpec(
        _fscwn,
        groups=FSCWN.GROUPS,
        scales=(2,),
        gpu_slots=HEAVY,
        paper="Shi, Li, Ying, Wang, Liu, Zhang, Yan: MR image super-resolution via wide residual "
        "networks with fixed skip connection, IEEE JBHI 23(3):1129-1140, 2019",
    ),
}


def gpu_slots(model: str) -> int:
    """The share of one GPU (out of :data:`GPU_SLOTS_PER_CARD`) that training ``model`` takes."""
    if model not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {model!r}; registered: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[model].gpu_slots


def build_model(name: str, scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    """Build a registered model, checking that the scale and strategy are ones it supports."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODEL_REGISTRY)}")
    spec = MODEL_REGISTRY[name]
    if scale not in spec.scales:
        raise ValueError(f"model {name!r} supports scales {spec.scales}, not {scale}")
    if strategy not in spec.strategies:
        raise ValueError(f"model {name!r} supports strategies {spec.strategies}, not {strategy!r}")
    return spec.builder(scale, strategy, **options)
