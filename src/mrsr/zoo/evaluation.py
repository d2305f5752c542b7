"""A shipped network's test figures, computed from its own bytes on the embedded sample.

``mrsr models --add`` evaluates the weights it ships here (so a card can only state what those
exact bytes score), and ``mrsr models --verify --recompute`` evaluates every shipped network again
and compares with its card. Both read the sample (data/btp-sample), ingest it once into a temporary
slice store, split it as the card records and run the evaluation code of ``mrsr evaluate``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from mrsr.config import file_sha256
from mrsr.zoo.manifest import EvaluationSpec, ZooError

SAMPLE = Path("data") / "btp-sample"
PSNR_TOLERANCE_DB = 0.01  # a recomputed PSNR further than this from its card is a failure
SSIM_TOLERANCE = 1e-4


def find_sample(given: Path | None = None) -> Path:
    """The embedded sample folder: ``given``, else data/btp-sample in the working folder or the clone.

    Raises:
        ZooError: none found (a pip-installed copy has no sample: give ``--sample``).
    """
    candidates = [given] if given is not None else [Path.cwd() / SAMPLE, Path(__file__).resolve().parents[3] / SAMPLE]
    for folder in candidates:
        if folder is not None and (folder / "README.md").exists() and any(folder.rglob("*.nii.gz")):
            return folder
    raise ZooError(f"--sample: no embedded sample at {candidates[0]} (a clone of mrsr has it at {SAMPLE}); "
                   "give --sample DIR")


class SampleEvaluator:
    """The sample ingested once into a temporary store, split per recorded split settings on demand."""

    def __init__(self, sample: Path) -> None:
        self.sample = sample
        self._tmp = tempfile.TemporaryDirectory(prefix="mrsr-zoo-")
        self._splits: dict[tuple, Any] = {}
        self.store: Path | None = None

    def __enter__(self) -> SampleEvaluator:
        from mrsr.data.ingest import ingest

        self.store = self.workdir / "store"
        ingest("sample", self.sample, self.store)
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    @property
    def workdir(self) -> Path:
        """A private folder that lives as long as this object's ``with`` block."""
        return Path(self._tmp.name)

    def split(self, settings: dict[str, Any]):
        """The split table of ``settings`` (``by``, ``seed``, ``train_sequences``, ``test_sequences``)."""
        from mrsr.data.split import make_split
        from mrsr.data.store import read_index

        key = tuple(sorted(settings.items()))
        if key not in self._splits:
            self._splits[key] = make_split(read_index(self.store), settings["by"], int(settings["seed"]),
                                           int(settings["train_sequences"]), int(settings["test_sequences"]))
        return self._splits[key]

    def means(self, method: str, scale: int, spec: EvaluationSpec, weights: Path | None = None) -> dict[str, Any]:
        """Mean PSNR, SSIM, foreground PSNR, slice count and test patients of one method."""
        from mrsr.evaluate import evaluate, refuse_nan_metrics
        from mrsr.inference import load_for_inference

        model, _ = load_for_inference(method, scale, weights)
        frame, _ = evaluate(model, self.store, self.split(spec.split), scale, spec.border,
                            spec.foreground_threshold, spec.max_test_slices)
        refuse_nan_metrics(frame, f"{weights or method} x{scale}")
        return {"psnr": float(frame["psnr"].mean()), "ssim": float(frame["ssim"].mean()),
                "psnr_fg": float(frame["psnr_fg"].mean()), "n_slices": int(len(frame)),
                "test_patients": sorted(set(frame["patient_id"].astype(str)))}


def figures_of(testset: SampleEvaluator, weights: Path, model: str, scale: int, spec: EvaluationSpec) -> dict[str, Any]:
    """A card's ``test`` block for ``weights``: its means, bicubic's on the same slices, and the gains."""
    ours = testset.means(model, scale, spec, weights)
    bic = testset.means("bicubic", scale, spec)
    return {"psnr": ours["psnr"], "ssim": ours["ssim"], "psnr_fg": ours["psnr_fg"],
            "bicubic_psnr": bic["psnr"], "bicubic_ssim": bic["ssim"], "gain_db": ours["psnr"] - bic["psnr"],
            "ssim_gain": ours["ssim"] - bic["ssim"], "n_slices": ours["n_slices"],
            "test_patients": ours["test_patients"]}


def spec_for(weights: Path, config: dict[str, Any], scale: int) -> EvaluationSpec:
    """How ``weights`` (trained with ``config``) are evaluated: that profile's split and evaluate settings."""
    from mrsr.config import border_pixels

    split = {k: config["split"][k] for k in ("by", "seed", "train_sequences", "test_sequences")}
    return EvaluationSpec(weights_sha256=file_sha256(weights), split=split, border=border_pixels(config, scale),
                          foreground_threshold=float(config["evaluate"]["foreground_threshold"]),
                          max_test_slices=config["evaluate"]["max_test_slices"] or None)


def differences(card_test: dict[str, Any], recomputed: dict[str, Any]) -> list[str]:
    """Where recomputed figures differ from a card's beyond the tolerances (one line each)."""
    out = []
    for key, tolerance, unit in (("psnr", PSNR_TOLERANCE_DB, " dB"), ("bicubic_psnr", PSNR_TOLERANCE_DB, " dB"),
                                 ("ssim", SSIM_TOLERANCE, ""), ("bicubic_ssim", SSIM_TOLERANCE, "")):
        if abs(card_test[key] - recomputed[key]) > tolerance:
            out.append(f"test {key} {card_test[key]:.4f}{unit} on the card, {recomputed[key]:.4f}{unit} recomputed")
    if card_test["n_slices"] != recomputed["n_slices"]:
        out.append(f"{card_test['n_slices']} test slices on the card, {recomputed['n_slices']} recomputed")
    return out
