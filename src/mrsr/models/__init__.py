"""The model registry: config name -> model class. An explicit dict, no import magic.

Every class takes ``(scale, strategy=None, *, <options>)`` with its options from the config
(``model.<name>``, docs/models.md) and says on itself what it supports (:class:`SuperResolver`'s
``scales``, ``strategies``, ``groups``, ``gpu_slots``); shared layers are in :mod:`mrsr.models.blocks`.
"""

from __future__ import annotations

from typing import Any

from mrsr.models.base import GPU_SLOTS_PER_CARD, SuperResolver
from mrsr.models.bicubic import Bicubic
from mrsr.models.decnn import DeCNN
from mrsr.models.espcn import ESPCN
from mrsr.models.fscwn import FSCWN
from mrsr.models.fsrcnn import FSRCNN
from mrsr.models.proposed import MultiResolutionSR
from mrsr.models.srcnn import SRCNN

__all__ = ["GPU_SLOTS_PER_CARD", "MODEL_REGISTRY", "SuperResolver", "build_model", "gpu_slots"]

#: Config name -> model class (each module's docstring cites the publication it reproduces).
MODEL_REGISTRY: dict[str, type[SuperResolver]] = {
    "bicubic": Bicubic,
    "proposed": MultiResolutionSR,
    "srcnn": SRCNN,
    "fsrcnn": FSRCNN,
    "espcn": ESPCN,
    "decnn": DeCNN,
    "fscwn": FSCWN,
}


def _model_class(name: str) -> type[SuperResolver]:
    """The registered class of ``name``; an unknown name is a KeyError listing the registered ones."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model {name!r}; registered: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]


def gpu_slots(model: str) -> int:
    """The share of one GPU (out of :data:`GPU_SLOTS_PER_CARD`) that training ``model`` takes."""
    return _model_class(model).gpu_slots


def build_model(name: str, scale: int, strategy: str | None = None, **options: Any) -> SuperResolver:
    """Build a registered model; its constructor refuses a scale or strategy it does not support.

    Args:
        name: registry name (a key of :data:`MODEL_REGISTRY`).
        scale: upscaling factor.
        strategy: one of the class's ``strategies`` (``None`` for models without strategies).
        **options: the class's keyword options (config ``model.<name>``).

    Raises:
        KeyError: an unregistered name.
        ValueError: a scale, strategy or option value the model does not support.
        TypeError: an option the model does not have.
    """
    return _model_class(name)(scale, strategy, **options)
