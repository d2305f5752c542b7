"""The metric recipe, in one place (printed verbatim in the report).

- Intensities: every slice is divided by its series' maximum (``norm`` in split.csv), so the
  ground truth lies in [0, 1]; the data range is 1.
- Estimates are clipped to [0, 1] (every method alike, bicubic included).
- ``border`` pixels are cropped from each edge before any metric (default: the scale).
- PSNR = 10 log10(1 / MSE) over the cropped slice.
- Foreground PSNR: the same over pixels whose ground truth exceeds ``foreground_threshold``.
- SSIM: Wang et al. 2004 with a Gaussian window (11 x 11, sigma 1.5), K1 = 0.01, K2 = 0.03,
  population (biased) statistics, the mean of the SSIM map without its 5-pixel margin (the same
  as ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: an 11 x 11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 1.0

RECIPE = __doc__


def crop_border(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def psnr(reference: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB for data range 1; ``mask`` restricts the mean squared error to some pixels."""
    diff = np.asarray(reference, np.float64) - np.asarray(estimate, np.float64)
    sq = diff**2 if mask is None else (diff**2)[mask]
    if sq.size == 0:
        return float("nan")
    mse = float(sq.mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(DATA_RANGE**2 / mse)


def ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean SSIM (Wang 2004, Gaussian window) of two 2-D images with data range 1."""
    x = np.asarray(reference, np.float64)
    y = np.asarray(estimate, np.float64)
    blur = lambda a: gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    return float(smap[pad:-pad, pad:-pad].mean())


def slice_metrics(reference: np.ndarray, estimate: np.ndarray, border: int, foreground_threshold: float) -> dict[str, float]:
    """PSNR, SSIM and foreground PSNR of one slice, following the recipe above."""
    ref = crop_border(np.asarray(reference, np.float64), border)
    est = crop_border(np.clip(np.asarray(estimate, np.float64), 0.0, DATA_RANGE), border)
    return {
        "psnr": psnr(ref, est),
        "ssim": ssim(ref, est),
        "psnr_fg": psnr(ref, est, ref > foreground_threshold),
    }
