"""The model registry: config name -> model class, from the model spec (:mod:`mrsr.modelspec`).

Each entry of :data:`mrsr.modelspec.MODEL_SPECS` names the module and class of its model; this
package imports exactly those, in the spec's order, so a model is registered once, by its spec entry.
Every class takes ``(scale, strategy=None, *, <options>)`` with its options from the config
(``model.<name>``, docs/models.md) and takes what it supports from its spec (:class:`SuperResolver`'s
``scales``, ``strategies``, ``groups``, ``gpu_slots``); shared layers are in :mod:`mrsr.models.blocks`.
"""

from __future__ import annotations

import importlib
from typing import Any

from mrsr.models.base import GPU_SLOTS_PER_CARD, SuperResolver
from mrsr.modelspec import MODEL_SPECS, ModelSpec, spec_of

__all__ = ["GPU_SLOTS_PER_CARD", "MODEL_REGISTRY", "SuperResolver", "build_model", "gpu_slots"]


def _load(spec: ModelSpec) -> type[SuperResolver]:
    """The class ``spec`` names, checked to take its facts from that very entry."""
    cls = getattr(importlib.import_module(spec.module), spec.class_name)
    if not (isinstance(cls, type) and issubclass(cls, SuperResolver)) or cls.__dict__.get("spec") is not spec:
        raise TypeError(f"{spec.module}.{spec.class_name}: not a SuperResolver with spec = MODEL_SPECS[{spec.name!r}]")
    return cls


#: Config name -> model class (each module's docstring cites the publication it reproduces).
MODEL_REGISTRY: dict[str, type[SuperResolver]] = {name: _load(spec) for name, spec in MODEL_SPECS.items()}


def gpu_slots(model: str) -> int:
    """The share of one GPU (out of :data:`GPU_SLOTS_PER_CARD`) that training ``model`` takes."""
    return spec_of(model).gpu_slots


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
    spec_of(name)  # an unregistered name: a KeyError listing the registered ones
    return MODEL_REGISTRY[name](scale, strategy, **options)
