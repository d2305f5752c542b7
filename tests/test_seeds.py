"""Training seeds: the config's seed lists, one seed per run of `mrsr train`, and `mrsr summarize`'s
mean and spread across seeds (checked by hand)."""

from __future__ import annotations

import copy
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from mrsr.cli import main
from mrsr.config import ConfigError, Job, job_seeds, job_train_settings, leakage_job, validate_config
from mrsr.evaluate import SUMMARY_COLUMNS, summarize
from mrsr.train import train
from mrsr.workflow_support import SEED_DIR, SEED_RE, seed_dir

PROPOSED = Job("proposed", "multi", 2)
SRCNN = Job("srcnn", None, 2)


def test_seed_lists_of_the_shipped_profiles(default_config, root):
    paper = yaml.safe_load((root / "config/paper.yaml").read_text())
    assert job_seeds(paper, PROPOSED) == [0, 1, 2] and job_seeds(default_config, PROPOSED) == [0]
    assert leakage_job(paper) == leakage_job(default_config) == PROPOSED  # the leakage check is on in both
    assert seed_dir(2) == SEED_DIR.format(seed=2) == "seed2" and re.fullmatch(SEED_RE, "12")


def test_seeds_are_a_train_key_overridable_per_experiment(default_config):
    cfg = copy.deepcopy(default_config)
    cfg["train"].pop("seeds", None)
    cfg["train"]["seed"] = 4
    assert job_seeds(cfg, PROPOSED) == [4]  # `seed` alone: one seed
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "seed"} | {"seeds": [0, 1, 2]}
    srcnn = next(e for e in cfg["experiments"] if e["model"] == "srcnn")
    srcnn["train"]["seeds"] = [7]
    assert job_seeds(cfg, PROPOSED) == [0, 1, 2] and job_seeds(cfg, SRCNN) == [7]
    srcnn["train"] = {"seed": 9}  # an experiment's `seed` replaces the global list too
    assert job_seeds(cfg, SRCNN) == [9]
    validate_config(cfg)
    # One run's settings: one seed, no list, so adding a seed to the list changes no existing run.
    settings = job_train_settings(cfg, PROPOSED, seed=2)
    assert settings["seed"] == 2 and "seeds" not in settings
    assert job_train_settings(cfg, PROPOSED)["seed"] == 0  # default: the first seed
    more = copy.deepcopy(cfg)
    more["train"]["seeds"] = [0, 1, 2, 3]
    assert job_train_settings(more, PROPOSED, seed=1) == job_train_settings(cfg, PROPOSED, seed=1)


def test_bad_seed_settings_are_refused(default_config):
    for train, match in (({"seed": 0, "seeds": [0, 1]}, "not both"), ({"seeds": []}, "train.seeds"),
                         ({"seeds": [0, 0]}, "train.seeds"), ({"seeds": [-1]}, "train.seeds")):
        cfg = copy.deepcopy(default_config)
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in ("seed", "seeds")} | train
        with pytest.raises(ConfigError, match=match):
            validate_config(cfg)


def test_leakage_settings_are_checked(default_config):
    for leakage, match in (({"job": "espcn_x5"}, "leakage.job"), ({"job": "proposed_double_x3"}, "not a training job"),
                           ({"job": "proposed_multi_x2", "seeds": [1]}, "leakage")):
        cfg = copy.deepcopy(default_config) | {"leakage": leakage}
        with pytest.raises(ConfigError, match=match):
            validate_config(cfg)
    cfg = copy.deepcopy(default_config)
    cfg["split"]["by"] = "patient"
    with pytest.raises(ConfigError, match="already 'patient'"):
        validate_config(cfg)
    assert leakage_job(validate_config(copy.deepcopy(default_config) | {"leakage": None})) is None


def _per_image(path, method, strategy, seed, psnr, ssim, slices=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"method": method, "strategy": strategy, "scale": 2, "seed": seed,
                  "slice_id": slices or [f"s{i}" for i in range(len(psnr))], "psnr": psnr, "ssim": ssim,
                  "psnr_fg": np.asarray(psnr) - 1}).to_csv(path, index=False)
    return path


def test_summarize_gives_the_mean_and_spread_across_seeds_by_hand(tmp_path):
    psnr = {0: [31.0, 33.0], 1: [32.0, 34.0], 2: [33.0, 36.0]}
    ssim = {0: [0.90, 0.80], 1: [0.92, 0.84], 2: [0.91, 0.85]}
    files = [_per_image(tmp_path / "bicubic_x2.csv", "bicubic", "", "", [30.0, 32.0], [0.9, 0.8])]
    files += [_per_image(tmp_path / seed_dir(k) / "proposed_multi_x2.csv", "proposed", "multi", k, psnr[k], ssim[k])
              for k in psnr]
    summary = summarize(files)
    assert list(summary.columns) == SUMMARY_COLUMNS
    ours = summary[summary["method"] == "proposed"].iloc[0]
    means = [32.0, 33.0, 34.5]  # each seed's mean over its two slices
    assert ours["psnr"] == pytest.approx((32.0 + 33.0 + 34.5) / 3)
    sd = math.sqrt(sum((m - sum(means) / 3) ** 2 for m in means) / (3 - 1))  # sample sd across seeds
    assert ours["psnr_seed_std"] == pytest.approx(sd) == pytest.approx(1.2583, abs=1e-4)
    assert ours["ssim"] == pytest.approx((0.85 + 0.88 + 0.88) / 3)
    assert ours["ssim_seed_std"] == pytest.approx(statistics.stdev([0.85, 0.88, 0.88]))
    assert ours["n_seeds"] == 3 and ours["n_images"] == 2  # slices per seed, not per seed x slice
    # psnr_std keeps its meaning, the spread over slices: here the mean of the seeds' own.
    assert ours["psnr_std"] == pytest.approx((math.sqrt(2) + math.sqrt(2) + math.sqrt(4.5)) / 3)
    assert ours["psnr_fg"] == pytest.approx(ours["psnr"] - 1)
    bicubic = summary[summary["method"] == "bicubic"].iloc[0]
    assert bicubic["n_seeds"] == 0 and math.isnan(bicubic["psnr_seed_std"]) and bicubic["psnr"] == 31.0
    # One seed: every column means what it did before seeds; no spread across seeds.
    one = summarize(files[:2]).set_index("method").loc["proposed"]
    assert one["psnr"] == 32.0 and one["psnr_std"] == pytest.approx(math.sqrt(2)) and one["n_seeds"] == 1
    assert math.isnan(one["psnr_seed_std"])


def test_summarize_refuses_a_seed_twice_and_seeds_on_other_slices(tmp_path):
    a = _per_image(tmp_path / "a.csv", "proposed", "multi", 0, [31.0, 33.0], [0.9, 0.8])
    b = _per_image(tmp_path / "b.csv", "proposed", "multi", 0, [31.0, 33.0], [0.9, 0.8])
    with pytest.raises(ValueError, match="both hold proposed multi x2 seed 0"):
        summarize([a, b])
    c = _per_image(tmp_path / "c.csv", "proposed", "multi", 1, [31.0, 33.0], [0.9, 0.8], slices=["s0", "s9"])
    with pytest.raises(ValueError, match="different test slices"):
        summarize([a, c])


def test_mrsr_train_seed_sets_initialisation_and_batch_order(tmp_path, patches, tiny_config, capsys):
    """--seed feeds every random choice of a run: another seed gives other initial weights and other
    batches; the same seed the same run, bit for bit (train.deterministic)."""
    tiny_config["train"].update(epochs=1, steps_per_epoch=2, seeds=[0, 1])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "0")):
        out = tmp_path / name / "proposed_multi_x2.safetensors"
        assert main(["train", "--job", "proposed_multi_x2", "--seed", seed, "--patches", str(patches),
                     "--config", str(config), "--out", str(out)]) == 0
        runs[name] = load_file(str(out))
        assert yaml.safe_load(out.with_suffix(".json").read_text())["train"]["seed"] == int(seed)
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(np.array_equal(runs["a"][k], runs["c"][k]) for k in runs["a"])
    with pytest.raises(SystemExit) as exc:
        main(["train", "--job", "proposed_multi_x2", "--seed", "-1", "--patches", str(patches), "--config",
              str(config), "--out", str(tmp_path / "d.safetensors")])
    assert exc.value.code == 2 and "a seed is a non-negative integer" in capsys.readouterr().err


def test_the_batch_order_and_initialisation_follow_the_seed(monkeypatch, tmp_path, patches, tiny_config):
    """The two random choices of a run, by where train.py makes them: the global RNG (weight
    initialisation) and each epoch's batch-order generator are seeded from the run's seed."""
    import torch

    orders = []
    randperm = torch.randperm

    def spy(n, *args, generator=None, **kwargs):
        orders.append(generator.initial_seed())
        return randperm(n, *args, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "randperm", spy)
    tiny_config["train"].update(epochs=2, steps_per_epoch=1)
    train(PROPOSED, patches, tmp_path / "m.safetensors", tiny_config, seed=3)
    assert orders == [3 * 100_003 + 0, 3 * 100_003 + 1]  # (seed, epoch)
    assert torch.initial_seed() == 3
