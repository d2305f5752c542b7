"""Report tables: ours beside the paper's, gains over bicubic and their paired intervals, every scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mrsr.report import bootstrap_diff, table1_rows, table2_rows


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
