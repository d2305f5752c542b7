"""Report tables: ours beside the paper's, gains over bicubic and their paired intervals, every scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrsr.report import best_baseline, bootstrap_diff, paired_comparison, table1_rows, table2_rows


def test_table2_rows_for_several_scales():
    rng = np.random.default_rng(0)
    per_image, summary = {}, []
    for scale in (2, 3, 4):
        base = 30 + rng.random(10)
        for method, strategy, gain in (("bicubic", "", 0.0), ("proposed", "multi", 1.0), ("proposed", "single", -0.5)):
            name = f"{method}_{strategy}_x{scale}" if strategy else f"{method}_x{scale}"
            psnr = base + gain
            per_image[name] = pd.DataFrame({"slice_id": [f"s{i}" for i in range(10)], "psnr": psnr})
            summary.append({"method": method, "strategy": strategy, "scale": scale, "psnr": psnr.mean(), "ssim": 0.9,
                            "n_images": 10, "psnr_std": psnr.std(), "ssim_std": 0.0, "psnr_fg": psnr.mean()})
    rows = table2_rows(pd.DataFrame(summary), per_image)
    assert [(r["method"], r["scale"]) for r in rows] == [(m, s) for s in (2, 3, 4) for m in ("Bicubic", "Ours")]
    for r in rows:
        if r["method"] == "Ours":
            assert r["gain"] == pytest.approx(1.0)
            assert r["ci"] == pytest.approx((1.0, 1.0, 1.0))  # a constant paired difference
            assert r["paper_gain"] == pytest.approx({2: 6.01, 3: 3.63, 4: 3.08}[r["scale"]])
    t1 = table1_rows(pd.DataFrame(summary))
    assert [r["strategy"] for r in t1] == ["Single upsampling", "Multi-resolution upsampling"]
    assert t1[1]["diff_psnr"] == pytest.approx(t1[1]["psnr"] - 45.67)


def test_bootstrap_interval_contains_the_mean():
    a = np.arange(20.0)
    mean, lo, hi = bootstrap_diff(a + 0.5, a)
    assert mean == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    mean, lo, hi = bootstrap_diff(np.random.default_rng(1).normal(1, 1, 200), np.zeros(200))
    assert lo < mean < hi and lo > 0.5


def _images(psnr: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"slice_id": [f"s{i}" for i in range(len(psnr))], "psnr": psnr})


def test_every_method_is_compared_with_the_best_baseline_of_its_scale():
    rng = np.random.default_rng(3)
    base = 30 + rng.random(12)
    gains = {"bicubic": 0.0, "srcnn": 0.4, "fscwn": 0.9, "proposed": 1.5}  # fscwn: the best baseline
    per_image, summary = {}, []
    for method, gain in gains.items():
        strategy = "multi" if method == "proposed" else ""
        psnr = base + gain + (0.01 * rng.standard_normal(12) if method == "srcnn" else 0)
        per_image[f"{method}_{strategy}_x2" if strategy else f"{method}_x2"] = _images(psnr)
        summary.append({"method": method, "strategy": strategy, "scale": 2, "psnr": psnr.mean(), "ssim": 0.9,
                        "n_images": 12, "psnr_std": psnr.std(), "ssim_std": 0.0, "psnr_fg": psnr.mean()})
    summary = pd.DataFrame(summary)
    assert best_baseline(summary.set_index("method")) == "fscwn"
    rows = {r["method"]: r for r in table2_rows(summary, per_image)}
    assert rows["FSCWN"]["is_best_baseline"] and "vs_best" not in rows["FSCWN"]
    ours = rows["Ours"]["vs_best"]
    assert ours["ci"] == pytest.approx((0.6, 0.6, 0.6)) and ours["n"] == 12
    assert ours["p"] < 0.001  # 12 paired slices, all better: the exact two-sided p is 2 / 2**12
    assert rows["Bicubic"]["vs_best"]["ci"][0] == pytest.approx(-0.9)
    assert rows["SRCNN"]["best_baseline"] == "FSCWN"


def test_paired_comparison_by_hand():
    a, b = _images(np.array([31.0, 32, 33, 34, 35, 36, 37])), _images(np.array([30.0, 31, 32, 33, 34, 35, 38]))
    out = paired_comparison(a, b)  # differences: six of +1, one of -1
    assert out["ci"][0] == pytest.approx(5 / 7) and out["n"] == 7
    # Wilcoxon signed-rank by hand: all |d| tie (rank 4 each), so W- = 4 x (negative signs), and under
    # H0 the signs are fair coins: two-sided p = 2 * P(at most 1 of 7 negative) = 2 * 8 / 128.
    assert out["p"] == pytest.approx(0.125)
    assert paired_comparison(a, a)["p"] is None  # no differences: no test
    assert paired_comparison(a.head(5), b.head(5))["p"] is None  # too few slices
