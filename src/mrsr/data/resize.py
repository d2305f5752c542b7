"""MATLAB-``imresize``-style bicubic resampling, the project's one degradation and interpolation.

Keys' cubic convolution kernel with a = -0.5; when downscaling, the kernel is stretched by the
scale factor (antialiasing), as MATLAB's ``imresize(I, 1/s, 'bicubic')`` does. Output sample ``u``
(1-based) maps to input coordinate ``x = u / s + 0.5 * (1 - 1 / s)``; samples outside the image are
mirrored (MATLAB's symmetric padding). Each axis is a dense (out, in) weight matrix, so a 2-D resize
is two matrix products: exact, vectorised, and usable from NumPy and PyTorch alike.

Used by data preparation (LR generation), the bicubic baseline, SRCNN-style pre-upsampling and the
evaluation's bicubic row.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

KEYS_A = -0.5


def cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel (support [-2, 2])."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    ax2, ax3 = ax**2, ax**3
    near = (a + 2) * ax3 - (a + 3) * ax2 + 1
    far = a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


@lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, antialias: bool = True) -> np.ndarray:
    """The (out_len, in_len) float64 matrix that resamples one axis.

    Args:
        in_len: input length along the axis.
        out_len: output length along the axis.
        antialias: stretch the kernel when downscaling (MATLAB's default).
    """
    if in_len < 1 or out_len < 1:
        raise ValueError(f"resize lengths must be positive, got {in_len} -> {out_len}")
    scale = out_len / in_len
    stretch = scale if (antialias and scale < 1) else 1.0
    width = 4.0 / stretch
    u = np.arange(1, out_len + 1, dtype=np.float64)
    x = u / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]  # 1-based input indices
    weights = stretch * cubic(stretch * (x[:, None] - idx))
    weights /= weights.sum(axis=1, keepdims=True)
    # Symmetric (mirror) boundary: index 0 -> 1, -1 -> 2, in_len + 1 -> in_len, ...
    period = 2 * in_len
    zero_based = np.mod(idx - 1, period)
    zero_based = np.where(zero_based >= in_len, period - 1 - zero_based, zero_based).astype(np.int64)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(matrix, (rows, zero_based.ravel()), weights.ravel())
    matrix.setflags(write=False)
    return matrix


def imresize(image: np.ndarray, out_shape: tuple[int, int], antialias: bool = True) -> np.ndarray:
    """Bicubic resize of the last two axes of ``image`` to ``out_shape`` (float64 maths).

    Args:
        image: array (..., rows, cols).
        out_shape: (rows, cols) of the result.
        antialias: antialias when downscaling.
    Returns:
        array (..., out_rows, out_cols), float32 when the input is float32, else float64.
    """
    image = np.asarray(image)
    mr = resize_matrix(image.shape[-2], out_shape[0], antialias)
    mc = resize_matrix(image.shape[-1], out_shape[1], antialias)
    out = mr @ image.astype(np.float64) @ mc.T
    return out.astype(np.float32) if image.dtype == np.float32 else out


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """LR image of an HR image whose size is a multiple of ``scale`` (see :func:`mod_crop`)."""
    rows, cols = hr.shape[-2:]
    if rows % scale or cols % scale:
        raise ValueError(f"HR size {rows}x{cols} is not a multiple of the scale {scale}; mod-crop first")
    return imresize(hr, (rows // scale, cols // scale))


def upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upscaling by an integer factor: exactly ``scale`` x the LR size."""
    rows, cols = lr.shape[-2:]
    return imresize(lr, (rows * scale, cols * scale))


def mod_crop(hr: np.ndarray, scale: int) -> np.ndarray:
    """Crop the last two axes to multiples of ``scale`` (top-left kept)."""
    rows, cols = hr.shape[-2:]
    return hr[..., : rows - rows % scale, : cols - cols % scale]


@lru_cache(maxsize=256)
def _resize_tensor(in_len: int, out_len: int, antialias: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Made outside inference mode even when first asked for inside it (validation, upscale): an
    # inference tensor could not be saved for a later training step's backward.
    with torch.inference_mode(False):
        return torch.tensor(resize_matrix(in_len, out_len, antialias), dtype=dtype, device=device)


@torch.compiler.assume_constant_result
def resize_tensor(in_len: int, out_len: int, antialias: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`resize_matrix` as a cached ``dtype`` tensor on ``device`` (do not modify it in place).

    The matrix depends only on Python ints, so under ``torch.compile`` it is a constant: Dynamo calls
    this once while tracing and bakes the tensor into the graph (``assume_constant_result``), instead
    of tracing the NumPy code, which it cannot (``ndarray.setflags``) and which would be recomputed at
    every step if it could. Compiled and CUDA-graph steps therefore only see a constant matrix. (With
    dynamic shapes the sizes are symbols and this call is a graph break; training shapes are static.)
    """
    return _resize_tensor(in_len, out_len, antialias, dtype, device)


def torch_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upscaling of a (..., h, w) tensor, differentiable; identical maths to :func:`upscale`.

    Args:
        lr: (..., h, w) images.
        scale: integer factor.
    Returns:
        (..., scale*h, scale*w), two matrix products with the cached resize matrices.
    """
    h, w = lr.shape[-2:]
    mr = resize_tensor(h, h * scale, True, lr.dtype, lr.device)  # (scale*h, h)
    mc = resize_tensor(w, w * scale, True, lr.dtype, lr.device)  # (scale*w, w)
    return mr @ lr @ mc.T
