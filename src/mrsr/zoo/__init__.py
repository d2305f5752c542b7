"""Shipped networks: trained weights installed with the package, so ``mrsr upscale --model NAME`` works
right after set-up, offline.

This folder holds, per shipped network NAME (``fsrcnn-x2``, ...), ``NAME.safetensors`` (the trained
file, byte for byte), ``NAME.json`` (a small sidecar: what was trained, how, on what, and how well)
and one ``manifest.json`` (:mod:`mrsr.zoo.manifest`: a typed card per network, the default per
scale, a changelog). Modules:

- :mod:`~mrsr.zoo.manifest`: the manifest and its card, names, checksums, what ``--model`` selects;
- :mod:`~mrsr.zoo.evaluation`: a network's test figures computed from its bytes on the sample;
- :mod:`~mrsr.zoo.shipping` and :mod:`~mrsr.zoo.commit`: ``--add`` and ``--default``, all at once or not at all;
- :mod:`~mrsr.zoo.checks`: ``--verify`` (and ``--recompute``);
- :mod:`~mrsr.zoo.cards`: the table and docs/model-zoo.md; :mod:`~mrsr.zoo.cli`: the command.

Trust: a shipped file is used only after both of its files match the manifest's SHA-256; nothing
here unpickles (safetensors and JSON only, :mod:`mrsr.weights`).
"""

from __future__ import annotations

from pathlib import Path

from mrsr.zoo.manifest import (
    FORMAT,
    MANIFEST,
    NAME_PATTERN,
    Card,
    Manifest,
    ZooError,
    read_manifest,
    read_shipped_sidecar,
    resolve_model,
    shipped_weights,
)

ZOO_DIR = Path(__file__).resolve().parent  # tests point this at a copy (the modules read it at call time)

__all__ = ["FORMAT", "MANIFEST", "NAME_PATTERN", "ZOO_DIR", "Card", "Manifest", "ZooError", "read_manifest",
           "read_shipped_sidecar", "resolve_model", "shipped_weights"]
