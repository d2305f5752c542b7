"""``mrsr patches``: LR/HR training patch pairs for one scale, vectorised.

For every training slice: normalise by its series' ``norm``, mod-crop to the scale, make the LR
image by bicubic downscaling (:mod:`mrsr.data.resize`), and cut LR patches of ``lr_size`` at
``lr_stride`` with the HR patch of (lr_size - 1) * scale + 1 pixels whose top-left pixel is the
scale-multiple of the LR one (the paper's 14/27, 10/28, 8/29). A few training slices are held out
whole for the per-epoch validation PSNR.

Output npz: ``lr`` (N, 1, m, m) and ``hr`` (N, 1, P, P) float32, plus ``val_lr_K``/``val_hr_K``
full slices.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from mrsr.config import ConfigError, load_config
from mrsr.data.resize import downscale, mod_crop
from mrsr.data.split import add_store_and_split_arguments, read_split
from mrsr.data.store import load_series, read_index
from mrsr.errors import UsageError, output_file
from mrsr.io import atomic_path


def hr_patch_size(lr_size: int, scale: int) -> int:
    return (lr_size - 1) * scale + 1


def degrade(hr_slices: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(mod-cropped HR, LR) for a stack (n, rows, cols) of normalised slices."""
    hr = np.ascontiguousarray(mod_crop(hr_slices, scale), dtype=np.float32)
    return hr, downscale(hr, scale)


def extract_patches(hr: np.ndarray, lr: np.ndarray, scale: int, lr_size: int, lr_stride: int) -> tuple[np.ndarray, np.ndarray]:
    """All patch pairs of a stack of images, without a per-patch Python loop.

    Args:
        hr: (n, s*h, s*w) HR images.
        lr: (n, h, w) LR images.
    Returns:
        (lr patches (N, m, m), hr patches (N, P, P)), row-major over images, rows, columns.
    """
    n, h, w = lr.shape
    if h < lr_size or w < lr_size:
        return np.empty((0, lr_size, lr_size), np.float32), np.empty((0,) + (hr_patch_size(lr_size, scale),) * 2, np.float32)
    p = hr_patch_size(lr_size, scale)
    lr_win = sliding_window_view(lr, (lr_size, lr_size), axis=(1, 2))[:, ::lr_stride, ::lr_stride]
    nr, nc = lr_win.shape[1:3]
    hr_win = sliding_window_view(hr, (p, p), axis=(1, 2))[:, :: scale * lr_stride, :: scale * lr_stride][:, :nr, :nc]
    return lr_win.reshape(-1, lr_size, lr_size).copy(), hr_win.reshape(-1, p, p).copy()


def validation_slice_ids(index: pd.DataFrame, split: pd.DataFrame, val_slices: int, seed: int) -> set:
    """The validation slices: ``val_slices`` slices held out whole from the training series, seeded
    (the same for every scale; the report lists them by series)."""
    train = split[split["split"] == "train"]
    rng = np.random.default_rng(seed)
    candidates = index[index["series_key"].isin(train["series_key"])]["slice_id"].to_numpy()
    return set(rng.choice(candidates, size=min(val_slices, max(len(candidates) - 1, 0)), replace=False))


def make_patches(store: Path, split: pd.DataFrame, scale: int, lr_size: int, lr_stride: int,
                 val_slices: int, seed: int) -> dict[str, np.ndarray]:
    train = split[split["split"] == "train"]
    index = read_index(store)
    val_ids = validation_slice_ids(index, split, val_slices, seed)
    lr_parts, hr_parts, out = [], [], {}
    largest = (0, 0)  # the largest training LR image, for the message when no patch fits
    for row in train.itertuples():
        volume = np.asarray(load_series(store, row.series_key), dtype=np.float32) / np.float32(row.norm)
        ids = index[index["series_key"] == row.series_key].sort_values("slice_index")["slice_id"].to_numpy()
        is_val = np.array([i in val_ids for i in ids])
        hr, lr = degrade(volume, scale)
        largest = max(largest, lr.shape[1:])
        lp, hp = extract_patches(hr[~is_val], lr[~is_val], scale, lr_size, lr_stride)
        lr_parts.append(lp)
        hr_parts.append(hp)
        for k in np.flatnonzero(is_val):
            j = len(out) // 2
            out[f"val_lr_{j}"], out[f"val_hr_{j}"] = lr[k], hr[k]
    out["lr"] = np.concatenate(lr_parts)[:, None]
    out["hr"] = np.concatenate(hr_parts)[:, None]
    if len(out["lr"]) == 0:  # stop here, naming the key, not with a traceback in training
        raise ConfigError(
            f"config key 'patches.x{scale}.lr_size': {lr_size} gives no patch: training LR images at x{scale} are "
            f"at most {largest[0]} x {largest[1]} pixels (min side {min(largest)}); use an lr_size at most that")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_and_split_arguments(parser)
    parser.add_argument("--config", required=True, type=Path, help="workflow config (patches.x<SCALE> section)")
    parser.add_argument("--scale", required=True, type=int, help="upscaling factor; the config needs patches.x<SCALE>")
    parser.add_argument("--out", required=True, type=output_file, help="patches .npz to write")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    pcfg = cfg["patches"].get(f"x{args.scale}")
    if pcfg is None:
        have = ", ".join(sorted(cfg["patches"]))
        raise UsageError(f"--scale {args.scale}: {args.config} has no 'patches.x{args.scale}' section (it has {have})")
    split = read_split(args.split)
    arrays = make_patches(args.store, split, args.scale, pcfg["lr_size"], pcfg["lr_stride"],
                          cfg["train"]["val_slices"], cfg["split"]["seed"])
    if pcfg["max_patches"] and len(arrays["lr"]) > pcfg["max_patches"]:
        keep = np.sort(np.random.default_rng(cfg["split"]["seed"]).choice(len(arrays["lr"]), pcfg["max_patches"], replace=False))
        arrays["lr"], arrays["hr"] = arrays["lr"][keep], arrays["hr"][keep]
    with atomic_path(args.out, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    print(f"x{args.scale}: {len(arrays['lr'])} patch pairs {arrays['lr'].shape[2:]} -> {arrays['hr'].shape[2:]}, "
          f"{sum(k.startswith('val_lr') for k in arrays)} validation slices")
    return 0
