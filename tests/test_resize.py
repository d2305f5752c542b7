"""The MATLAB-style bicubic against values derived independently of the implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mrsr.data.resize import cubic, downscale, imresize, mod_crop, resize_matrix, torch_upscale, upscale


def keys(x: float) -> float:
    """Keys' kernel (a = -0.5), written out from its closed form by hand."""
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x < 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def test_kernel_closed_form():
    for x in np.linspace(-2.5, 2.5, 41):
        assert cubic(x) == pytest.approx(keys(x), abs=1e-12)
    assert cubic(0) == 1 and cubic(1) == 0 and cubic(2) == 0
    assert cubic(0.5) == pytest.approx(0.5625)  # 1.5/8 - 2.5/4 + 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upscaling_an_impulse_gives_the_kernel(scale):
    # Upscaling: output u (1-based) samples input coordinate x = u/s + (1 - 1/s)/2; weight of input
    # pixel k (1-based) is keys(x - k). An impulse far from the borders shows those weights.
    n, k = 32, 16
    signal = np.zeros(n)
    signal[k - 1] = 1.0
    out = resize_matrix(n, n * scale) @ signal
    for u in range(1, n * scale + 1):
        x = u / scale + 0.5 * (1 - 1 / scale)
        if 3 < x < n - 3:
            assert out[u - 1] == pytest.approx(keys(x - k), abs=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_downscaling_weights_are_the_stretched_kernel(scale):
    # Antialiased downscaling: weights keys((x - k) / s) / s, normalised to sum to one.
    n = 48
    m = n // scale
    matrix = resize_matrix(n, m)
    u = m // 2
    x = u / (1 / scale) + 0.5 * (1 - scale)
    ks = np.arange(1, n + 1)
    expected = np.array([keys((x - k) / scale) / scale for k in ks])
    expected /= expected.sum()
    assert np.allclose(matrix[u - 1], expected, atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_ramp_reproduced_exactly_in_the_interior(scale):
    # A cubic-convolution kernel reproduces linear functions: LR pixel u of a ramp equals the
    # ramp at the LR pixel's centre, (u - 0.5) * s + 0.5 in 1-based HR coordinates.
    n = 60
    ramp = np.tile(np.arange(1, n + 1, dtype=float) * 0.7 + 3.0, (n, 1))
    lr = downscale(ramp, scale)
    u = np.arange(1, n // scale + 1)
    expected = ((u - 0.5) * scale + 0.5) * 0.7 + 3.0
    interior = slice(3, -3)
    assert np.allclose(lr[5, interior], expected[interior], atol=1e-10)


def test_constant_preserved_and_mirror_boundary():
    img = np.full((17, 23), 4.25)
    assert np.allclose(imresize(img, (40, 9)), 4.25)
    # Symmetric padding: beyond the edges the signal is mirrored (index 0 -> 1, -1 -> 2, n+1 -> n).
    values = np.array([0.0, 1.0])
    mirror = {-2: 2, -1: 2, 0: 1, 1: 1, 2: 2, 3: 2, 4: 1, 5: 1}
    out = resize_matrix(2, 4) @ values
    for u in range(1, 5):
        x = u / 2 + 0.25
        expected = sum(keys(x - k) * values[mirror[k] - 1] for k in range(-2, 6))
        assert out[u - 1] == pytest.approx(expected, abs=1e-12)


def test_matches_pillow_bicubic_in_the_interior():
    # Pillow's BICUBIC is Keys a = -0.5 with the same antialiasing; only borders differ.
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32)
    ours = downscale(img, 2)
    theirs = np.asarray(Image.fromarray(img, mode="F").resize((32, 32), Image.Resampling.BICUBIC))
    assert np.abs(ours[4:-4, 4:-4] - theirs[4:-4, 4:-4]).max() < 1e-5


def test_sizes_mod_crop_and_torch_equivalence():
    img = np.random.default_rng(1).random((2, 31, 29)).astype(np.float32)
    hr = mod_crop(img, 3)
    assert hr.shape == (2, 30, 27)
    lr = downscale(hr, 3)
    assert lr.shape == (2, 10, 9)
    up = upscale(lr, 3)
    assert up.shape == hr.shape
    up_t = torch_upscale(torch.from_numpy(lr), 3).numpy()
    assert np.allclose(up, up_t, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the scale"):
        downscale(img[0], 3)
