"""The manifest of the shipped networks and its typed card: reading, checking and naming.

``manifest.json`` (schema :data:`FORMAT`) holds ``defaults`` (scale -> the shipped name ``--scale N``
runs, with the message that chose it), ``changelog`` (one line per change) and ``models`` (name ->
:class:`Card`). Every file of a shipped network is used only after it matched the card's SHA-256.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mrsr.config import file_sha256
from mrsr.errors import UsageError
from mrsr.zoo.commit import recover

MANIFEST = "manifest.json"
FORMAT = 2  # the card schema's version: bumped whenever a card's keys change
# One pattern for every shipped name: lower-case words joined by hyphens, ending in the scale
# (fsrcnn-x2, proposed-multi-x2). No dot or slash, so a name can never be read as a path.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*-x(?P<scale>[1-9][0-9]?)$")
NAME_RULE = "lower-case letters and digits in hyphen-separated words ending in -xSCALE (fsrcnn-x2, proposed-multi-x2)"


class ZooError(UsageError):
    """A shipped network that cannot be named, found or trusted, or a network that cannot be shipped."""


def zoo_dir(folder: Path | None = None) -> Path:
    """``folder``, or the package's zoo (``mrsr.zoo.ZOO_DIR`` read at call time, so tests can point it elsewhere)."""
    return Path(folder) if folder is not None else Path(sys.modules["mrsr.zoo"].ZOO_DIR)


def check_name(name: str, scale: int | None = None) -> str:
    """``name`` when it follows :data:`NAME_PATTERN` (and ends in ``-x{scale}``), else ZooError."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise ZooError(f"--name {name!r}: not a shipped-network name; use {NAME_RULE}")
    if scale is not None and int(match["scale"]) != scale:
        raise ZooError(f"--name {name}: the network is x{scale}, so its name must end in -x{scale}")
    return name


@dataclass(frozen=True)
class FileRef:
    """A shipped file (a name inside the zoo folder) and its SHA-256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class EvaluationSpec:
    """How a card's test figures are recomputed: the embedded sample split and cropped as recorded,
    evaluated with the weights whose SHA-256 is ``weights_sha256`` (the figures belong to those bytes)."""

    weights_sha256: str
    split: dict[str, Any]
    border: int
    foreground_threshold: float
    max_test_slices: int | None = None


@dataclass(frozen=True)
class Card:
    """One shipped network's manifest entry."""

    model: str
    strategy: str | None
    scale: int
    job: str
    profile: str
    seed: int
    parameters: int
    weights: FileRef
    sidecar: FileRef
    test: dict[str, Any]
    cpu: dict[str, Any]
    evaluation: EvaluationSpec

    @classmethod
    def from_dict(cls, name: str, raw: Any, where: Path) -> Card:
        """A card from its JSON, or ZooError naming the manifest, the network and the key at fault."""
        try:
            fields = dict(raw)
            fields["weights"], fields["sidecar"] = FileRef(**raw["weights"]), FileRef(**raw["sidecar"])
            fields["evaluation"] = EvaluationSpec(**raw["evaluation"])
            card = cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise ZooError(f"{where}: the card of {name} is not a format-{FORMAT} card ({type(exc).__name__}: "
                           f"{exc}); reinstall mrsr") from None
        for ref in (card.weights, card.sidecar):
            if Path(ref.file).name != ref.file or ref.file.startswith("."):
                raise ZooError(f"{where}: the card of {name} names {ref.file!r}, not a file of the zoo folder")
        return card

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Manifest:
    """The whole manifest: defaults per scale, changelog and cards."""

    models: dict[str, Card] = field(default_factory=dict)
    defaults: dict[int, dict[str, str]] = field(default_factory=dict)  # scale -> {"name", "message"}
    changelog: list[str] = field(default_factory=list)

    def default(self, scale: int) -> str | None:
        """The shipped name that ``--scale`` runs without ``--model`` (None: none at that scale)."""
        chosen = self.defaults.get(scale)
        return chosen["name"] if chosen else None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "defaults": {str(s): d for s, d in sorted(self.defaults.items())},
                "changelog": self.changelog,
                "models": {n: c.to_dict() for n, c in sorted(self.models.items())}}


def read_manifest(folder: Path | None = None, must_exist: bool = True) -> Manifest:
    """The manifest of ``folder`` (default: the package's zoo), validated.

    Args:
        folder: the zoo folder.
        must_exist: when False, a zoo without a manifest reads as empty (shipping into a new folder).

    Raises:
        ZooError: missing (when ``must_exist``), unreadable, not JSON, not format :data:`FORMAT`,
            a default naming no card, or a card with missing keys.
    """
    path = zoo_dir(folder) / MANIFEST
    try:
        recover(path.parent)
    except OSError as exc:
        raise ZooError(f"{path.parent}: an unfinished change cannot be completed ({exc}); reinstall mrsr") from None
    if not path.exists() and not must_exist:
        return Manifest()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ZooError(f"{path}: missing, so no shipped network can be trusted; reinstall mrsr") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{path}: unreadable ({type(exc).__name__}: {exc}); reinstall mrsr") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("models"), dict):
        raise ZooError(f"{path}: not a format-{FORMAT} manifest (keys format, defaults, changelog, models); "
                       "reinstall mrsr")
    manifest = Manifest(models={n: Card.from_dict(n, c, path) for n, c in raw["models"].items()},
                        changelog=list(raw.get("changelog", [])))
    for scale, chosen in (raw.get("defaults") or {}).items():
        if not isinstance(chosen, dict) or chosen.get("name") not in manifest.models:
            raise ZooError(f"{path}: defaults.{scale} names no shipped network; reinstall mrsr")
        manifest.defaults[int(scale)] = chosen
    return manifest


def unlisted_files(manifest: Manifest, folder: Path | None = None) -> list[str]:
    """Weights and sidecar files in the zoo folder that no card lists (one line each)."""
    listed = {ref.file for c in manifest.models.values() for ref in (c.weights, c.sidecar)} | {MANIFEST}
    return [f"{path}: not listed in {MANIFEST} (an unfinished or foreign addition?); reinstall mrsr"
            for path in sorted(zoo_dir(folder).iterdir())
            if path.suffix in {".safetensors", ".json"} and not path.name.startswith(".") and path.name not in listed]


def file_problems(name: str, card: Card, folder: Path | None = None) -> list[str]:
    """One line per shipped file of ``name`` that is missing or fails its SHA-256 (empty: both fine)."""
    problems = []
    for ref in (card.weights, card.sidecar):
        path = zoo_dir(folder) / ref.file
        if not path.exists():
            problems.append(f"{path}: missing (shipped network {name}); reinstall mrsr")
        elif (found := file_sha256(path)) != ref.sha256:
            problems.append(f"{path}: SHA-256 {found[:12]}... is not the manifest's {ref.sha256[:12]}... "
                            f"(shipped network {name} altered or corrupt): refused; reinstall mrsr")
    return problems


def read_shipped_sidecar(name: str, folder: Path | None = None) -> dict[str, Any]:
    """The shipped sidecar of ``name`` (not checksummed: for listing; :func:`shipped_weights` checks)."""
    card = read_manifest(folder).models[name]
    return json.loads((zoo_dir(folder) / card.sidecar.file).read_text(encoding="utf-8"))


def shipped_weights(name: str, folder: Path | None = None) -> Path:
    """The weights file of shipped network ``name``, after both its files passed their SHA-256 check.

    Raises:
        ZooError: an unknown name (the message lists the shipped ones), or a file that is missing or
            fails its checksum (never loaded).
    """
    manifest = read_manifest(folder)
    card = manifest.models.get(name)
    if card is None:
        shipped = ", ".join(sorted(manifest.models)) or "none"
        raise ZooError(f"--model {name}: not a shipped network; shipped: {shipped}")
    problems = file_problems(name, card, folder)
    if problems:
        raise ZooError(problems[0])
    return zoo_dir(folder) / card.weights.file


def is_shipped_name(text: str) -> bool:
    """Whether ``--model TEXT`` is read as a shipped name: it follows :data:`NAME_PATTERN`.

    The rule: a value of the name pattern is always a shipped name, whatever lies in the working
    folder (a previous run's ``--out espcn-x2`` must not change what runs); anything else (it holds
    a dot or a slash, e.g. ``model.safetensors``, ``./espcn-x2``) is a path.
    """
    return NAME_PATTERN.match(text) is not None


def resolve_model(model: str | None, scale: int | None, folder: Path | None = None) -> Path:
    """What ``mrsr upscale --model MODEL --scale SCALE`` runs: a weights path, a shipped name, or (no
    ``--model``) the default shipped network of ``--scale`` written in the manifest.

    Raises:
        ZooError: neither given; no shipped network at ``scale``; an unknown name (naming a local
            path of that name, which a bare name never selects); a failed checksum.
    """
    if model is None:
        if scale is None:
            raise ZooError("--model: give weights (.safetensors) or a shipped name (mrsr models lists them), "
                           "or --scale alone for the default shipped network of that scale")
        manifest = read_manifest(folder)
        chosen = manifest.default(scale)
        if chosen is None:
            scales = ", ".join(f"x{s}" for s in sorted(manifest.defaults)) or "none"
            raise ZooError(f"--scale {scale}: no shipped network at x{scale} (shipped scales: {scales}); "
                           "give --model with weights trained for it")
        return shipped_weights(chosen, folder)
    if not is_shipped_name(model):
        path = Path(model)
        if is_shipped_name(path.name) and not path.is_file() and path.name in read_manifest(folder).models:
            raise ZooError(f"--model {model}: the path {path.resolve()} is not a weights file; it is named like "
                           f"the shipped network {path.name}, which --model {path.name} (a bare name) selects")
        if not path.exists():
            shipped = ", ".join(sorted(read_manifest(folder).models)) or "none"
            raise ZooError(f"--model {model}: no such weights file, nor a shipped network (shipped: {shipped})")
        return path
    manifest = read_manifest(folder)
    if model not in manifest.models and Path(model).exists():
        raise ZooError(f"--model {model}: not a shipped network (shipped: {', '.join(sorted(manifest.models))}); "
                       f"a bare name never means the local path {Path(model).resolve()}: write ./{model} "
                       "for weights of that name")
    return shipped_weights(model, folder)
