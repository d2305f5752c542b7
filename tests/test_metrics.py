"""The metric recipe against scikit-image and a case computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mrsr.metrics import psnr, slice_metrics, ssim


def test_psnr_by_hand():
    ref = np.zeros((4, 4))
    est = np.zeros((4, 4))
    est[0, 0] = 0.4  # MSE = 0.16 / 16 = 0.01 -> 20 dB
    assert psnr(ref, est) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf")


def test_psnr_and_ssim_match_scikit_image():
    rng = np.random.default_rng(3)
    ref = rng.random((48, 52))
    est = np.clip(ref + 0.05 * rng.standard_normal(ref.shape), 0, 1)
    assert psnr(ref, est) == pytest.approx(peak_signal_noise_ratio(ref, est, data_range=1), abs=1e-10)
    expected = structural_similarity(ref, est, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)
    assert ssim(ref, est) == pytest.approx(expected, abs=1e-10)


def test_ssim_of_constant_images_by_hand():
    # Two constants a, b: no variance, SSIM = (2ab + C1) / (a^2 + b^2 + C1) everywhere.
    a, b, c1 = 0.5, 0.4, (0.01) ** 2
    assert ssim(np.full((20, 20), a), np.full((20, 20), b)) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_slice_metrics_crop_clip_and_foreground():
    ref = np.zeros((20, 20))
    ref[5:15, 5:15] = 0.8
    est = ref.copy()
    est[0, :] = 5.0  # in the border: cropped away
    est[10, 10] = 0.9  # inside the foreground
    m = slice_metrics(ref, est, border=2, foreground_threshold=0.05)
    assert m["psnr"] == pytest.approx(10 * np.log10(256 / 0.01))
    assert m["psnr_fg"] == pytest.approx(10 * np.log10(100 / 0.01))
    clipped = slice_metrics(ref, np.full_like(ref, 2.0), border=0, foreground_threshold=0.05)
    assert clipped["psnr"] == pytest.approx(psnr(ref, np.ones_like(ref)))
