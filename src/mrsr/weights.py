"""Trained weights on disk: ``NAME.safetensors`` plus a ``NAME.json`` sidecar.

The sidecar holds at least ``model`` (registry name), ``scale``, ``strategy`` and ``options`` (the
builder's keyword arguments), plus the training config, metrics and git revision. The safetensors
header repeats ``model``, ``scale`` and ``strategy`` (:data:`PROVENANCE_KEYS`), and loading refuses
a pair whose two copies disagree: a sidecar from other weights would otherwise label x2 outputs x4.
Nothing here ever unpickles: ``.pt``/``.pth``/``.pkl``/``.ckpt`` files are refused, because loading
a pickle runs arbitrary code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mrsr.errors import UsageError
from mrsr.io import atomic_path, write_json
from mrsr.models import SuperResolver, build_model

PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}
REQUIRED_KEYS = ("model", "scale", "strategy")
PROVENANCE_KEYS = ("model", "scale", "strategy")  # written in both the safetensors header and the sidecar


class WeightsError(UsageError, ValueError):
    """A weights file that cannot be used, with the reason."""


class WeightsMismatchError(WeightsError):
    """Weights of another model or scale than the one asked for."""


def sidecar_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_weights(path: str | Path, model: SuperResolver, meta: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and its JSON sidecar, each atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: weights must be saved with the .safetensors suffix")
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise WeightsError(f"{path}: sidecar metadata lacks {missing}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={k: _text(meta[k]) for k in PROVENANCE_KEYS})
    write_json(sidecar_path(path), meta)


def _text(value: Any) -> str:
    """How a provenance value is written in the safetensors header (strings only; None is empty)."""
    return "" if value is None else str(value)


def check_provenance(path: str | Path, meta: dict[str, Any]) -> None:
    """Refuse weights whose safetensors header names another model, scale or strategy than their
    sidecar (files of two trainings mixed up). Keys absent from the header (files written before
    the strategy was recorded there) are not compared.

    Args:
        path: the .safetensors file.
        meta: its sidecar, already read.

    Raises:
        WeightsError: one line naming the key and both values.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    for key in PROVENANCE_KEYS:
        if key in header and header[key] != _text(meta.get(key)):
            raise WeightsError(f"{path}: the weights were saved as {key} {header[key]!r} but the sidecar "
                               f"{sidecar_path(path).name} says {meta.get(key)!r}: files of two models mixed up? Refused.")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar of a weights file, validated."""
    side = sidecar_path(path)
    if not side.exists():
        raise WeightsError(f"{path}: no JSON sidecar {side.name} beside it (model name, scale, strategy)")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{side}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise WeightsError(f"{side}: missing keys {missing}")
    return meta


def check_weights(path: str | Path, meta: dict[str, Any], model: str | None = None, scale: int | None = None) -> None:
    """Refuse weights whose sidecar names another model or scale than the one asked for.

    Without this, a command would run (and label) the sidecar's model under the name it was asked for.

    Args:
        path: the weights file (named in the message).
        meta: its sidecar (:func:`read_sidecar`, :func:`load_model`).
        model: the registry name asked for, or None to accept any.
        scale: the scale asked for, or None to accept any.

    Raises:
        WeightsMismatchError: naming the file, what its sidecar says and what was asked.
    """
    if model is not None and meta["model"] != model:
        raise WeightsMismatchError(
            f"{path}: weights of model {meta['model']!r} (sidecar {sidecar_path(path).name}), not of {model!r}")
    if scale is not None and int(meta["scale"]) != scale:
        raise WeightsMismatchError(f"{path}: trained for x{meta['scale']}, not x{scale}")


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[SuperResolver, dict[str, Any]]:
    """Build the registered model named by the sidecar and load its safetensors weights.

    Returns:
        (model in eval mode, sidecar metadata).
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: refusing to load a {path.suffix} file: PyTorch pickles can run arbitrary code "
            "when loaded. Use weights saved as .safetensors with a JSON sidecar."
        )
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: expected a .safetensors file")
    if not path.exists():
        raise WeightsError(f"{path}: no such file")
    meta = read_sidecar(path)
    check_provenance(path, meta)
    try:
        model = build_model(meta["model"], int(meta["scale"]), meta["strategy"], **meta.get("options", {}))
    except (KeyError, ValueError, TypeError) as exc:
        raise WeightsError(f"{sidecar_path(path)}: cannot build the model it names ({exc})") from exc
    try:
        state = load_file(str(path), device=str(map_location))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's message spans many lines: keep its first one
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: weights do not match model {meta['model']!r} of the sidecar ({first})") from exc
    return model.to(map_location).eval(), meta
