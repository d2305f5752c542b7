"""Shared fixtures: the repository root, the embedded sample, and a tiny configuration."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from mrsr.config import Job, job_train_settings, load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def default_config() -> dict:
    """config.yaml as every job reads it: validated, the schema's defaults filled in."""
    return load_config(ROOT / "config.yaml")


@pytest.fixture()
def train_config(default_config):
    """Builds a TrainConfig: the default profile's global ``train`` settings (seed 0) with keyword overrides
    (TrainConfig has no defaults of its own: they are the schema's)."""
    from mrsr.train import TrainConfig  # deferred: torch

    def make(**overrides) -> TrainConfig:
        return TrainConfig.from_config(job_train_settings(default_config, Job("proposed", "multi", 2), seed=0) | overrides)

    return make


@pytest.fixture()
def tiny_config(default_config) -> dict:
    """The default config shrunk to seconds: a small proposed net, two epochs of a few steps, two
    training seeds, and the default's leakage check (proposed_multi_x2 on a split by patient)."""
    cfg = copy.deepcopy(default_config)
    cfg["profile"] = "test"
    cfg["model"]["proposed"].update(features=8, units=2)
    cfg["experiments"] = [{"model": "proposed", "strategy": "multi", "scales": [2]}]
    cfg["scales"] = [2]
    cfg["train"].update(epochs=2, steps_per_epoch=3, batch_size=8, val_slices=1, threads=1, seeds=[0, 1])
    assert cfg["leakage"] == {"job": "proposed_multi_x2"}
    cfg["evaluate"]["max_test_slices"] = 3
    # Table 3 in miniature: one slice, few passes; bf16 kept (its path and PSNR columns are tested)
    # but at one pass, since without bfloat16 instructions a pass is slow.
    cfg["timing"].update(runs=3, warmup=1, slices=1, sizes=["native"], bf16_runs=1, roofline_n=512)
    return cfg


@pytest.fixture()
def patches(tmp_path):
    """A tiny x2 patch file (64 random 27x27 HR patches, their 14x14 decimations, one validation pair)."""
    rng = np.random.default_rng(0)
    hr = rng.random((64, 1, 27, 27)).astype(np.float32)
    lr = hr[:, :, ::2, ::2][:, :, :14, :14].copy()
    path = tmp_path / "x2.npz"
    np.savez(path, lr=lr, hr=hr, val_lr_0=lr[0, 0], val_hr_0=np.pad(hr[0, 0], ((0, 1), (0, 1))))
    return path


@pytest.fixture()
def weights(tmp_path) -> Path:
    """A weights file of the tiny proposed model (upscale_fixtures.tiny_model) with its sidecar."""
    from upscale_fixtures import save_tiny_weights  # deferred: torch

    return save_tiny_weights(tmp_path / "models" / "proposed_multi_x2.safetensors")


# The modules that run whole workflows (minutes each, mostly waiting for subprocesses and SLURM's
# status checks): started first, so that with one worker per core (pyproject.toml: pytest-xdist,
# --dist loadscope) the short modules fill the other workers meanwhile and all end together.
LONGEST_FIRST = ("test_slurm.py", "test_profiles.py", "test_workflow.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order
