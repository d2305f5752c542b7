"""DICOM pixels: stored values <-> scanner units, for every file that :mod:`mrsr.data.dicom_header` accepted.

The one place where mrsr turns DICOM pixel data into intensities (``mrsr ingest`` through
:mod:`mrsr.data.dicom`, ``mrsr upscale`` through :mod:`mrsr.upscale_io`) and, for upscale's
writer, turns intensities back into stored values (:func:`to_stored_values`, the exact inverse).

Pixel values are what the scanner measured, displayed bright = high signal: MONOCHROME1 stored
values are inverted within the stored range (``lo + hi - stored``, BitsStored and the sign give
``lo``/``hi``), then each frame's Rescale Slope/Intercept applies (per-frame ones of enhanced MR
first: :func:`mrsr.data.dicom_header.frame_rescale`); signed/unsigned and unused high bits are
honoured. So a MONOCHROME1 series and its MONOCHROME2 twin (stored values ``lo + hi - s``, same
rescale) give the same intensities: the ones the models were trained on. Decoding goes through
pydicom and its plugins (pylibjpeg-libjpeg: JPEG baseline/extended/lossless; pyjpegls: JPEG-LS;
pylibjpeg-openjpeg: JPEG 2000; RLE, deflated and big endian natively); native pixel data can also be
read straight from its file offset into a caller's array (:func:`decode_native_into`, ingest's fast path).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pydicom.pixels
from pydicom.dataset import Dataset

from mrsr.data.dicom_header import PixelInfo, Rejected, UnreadableDicom, pixel_info, read_dicom

INTEGER_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))  # smallest first
PREFERRED_PLUGIN = {  # pydicom picks the first available plugin; CharLS decodes JPEG-LS ~3x faster than libjpeg
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
}


def stored_range(info: PixelInfo) -> tuple[int, int]:
    """The values BitsStored and the sign allow (what the native path masks or sign-extends to, what
    MONOCHROME1 is inverted within, and what written values are clipped to)."""
    bits = info.bits_stored
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if info.signed else (0, 2**bits - 1)


def stored_dtype(info: PixelInfo) -> np.dtype:
    """The little-endian integer dtype of one stored value (BitsAllocated, PixelRepresentation)."""
    return np.dtype(f"<{'i' if info.signed else 'u'}{info.bits_allocated // 8}")


def exact_integer_dtype(infos: Iterable[PixelInfo]) -> np.dtype | None:
    """The smallest integer dtype of INTEGER_DTYPES that holds every scanner value these files can
    produce exactly, or None (then float32 is needed).

    Scanner value = stored value (inverted within the stored range for MONOCHROME1) * slope +
    intercept: an integer when slope and intercept are, within bounds that BitsStored and the sign
    give. Those integers are also what the float32 path computes (exact below 2**24), so storing
    them changes no value.
    """
    low = high = 0
    for info in infos:
        if info.float_data or info.bits_allocated > 16:
            return None
        lo, hi = stored_range(info)
        for slope, intercept in info.rescale or [(1.0, 0.0)]:
            if not (float(slope).is_integer() and float(intercept).is_integer()):
                return None
            ends = (lo * slope + intercept, hi * slope + intercept)
            low, high = min(low, *ends), max(high, *ends)
    for dtype in INTEGER_DTYPES:
        limits = np.iinfo(dtype)
        if limits.min <= low and high <= limits.max:
            return dtype
    return None


def fits(values: np.ndarray, dtype: np.dtype) -> bool:
    """Whether float ``values`` are integers that ``dtype`` holds (a decoder may exceed BitsStored)."""
    limits = np.iinfo(dtype)
    return bool(values.size == 0 or (limits.min <= values.min() and values.max() <= limits.max
                                      and np.array_equal(values, np.round(values))))


# ----------------------------------------------------------------------------------------------
# stored values <-> scanner units
def _convert_into(arr: np.ndarray, info: PixelInfo, out: np.ndarray, slots: Sequence[int]) -> None:
    """Stored values -> scanner units in ``out[slots]``: MONOCHROME1 inverted within the stored range
    (bright = high signal), then Rescale Slope/Intercept per frame. ``out`` is float32, or an integer
    dtype that :func:`exact_integer_dtype` chose for these values (integer arithmetic, exact)."""
    lo, hi = stored_range(info)
    integer = out.dtype.kind in "iu"
    for f, slot in enumerate(slots):
        slope, intercept = info.rescale[f] if f < len(info.rescale) else (1.0, 0.0)
        dst = out[slot]
        if integer:
            if not info.invert and slope == 1.0 and intercept == 0.0:
                dst[...] = arr[f]  # in range by construction
                continue
            values = arr[f].astype(np.int32)  # room for the transform before narrowing
            if info.invert:
                np.subtract(lo + hi, values, out=values)
            values *= int(slope)
            values += int(intercept)
            dst[...] = values
            continue
        dst[...] = arr[f]
        if info.invert:
            np.subtract(float(lo + hi), dst, out=dst)
        if slope != 1.0:
            dst *= np.float32(slope)
        if intercept != 0.0:
            dst += np.float32(intercept)


def to_scanner_units(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    """Stored values (n_frames, rows, cols) -> a new float32 array in scanner units."""
    out = np.empty(arr.shape, dtype=np.float32)
    _convert_into(arr, info, out, range(arr.shape[0]))
    return out


def to_stored_values(values: np.ndarray, info: PixelInfo, frame: int) -> np.ndarray:
    """Scanner units of one frame -> its stored values: the inverse of :func:`to_scanner_units`.

    Undoes the frame's Rescale Slope/Intercept, then (MONOCHROME1) the inversion within the stored
    range, so the values go back in the file's own convention; rounded, clipped to the stored range
    and cast to the stored dtype (:func:`stored_dtype`).

    Args:
        values: (rows, cols) intensities in scanner units (any size: a super-resolved frame too).
        info: the file's decoding parameters (integer pixel data).
        frame: which frame's rescale applies.
    """
    if info.float_data:
        raise ValueError("float pixel data has no stored integer values")
    slope, intercept = info.rescale[frame]
    # Rounded before the inversion, so a MONOCHROME1 value is exactly lo + hi minus what its
    # MONOCHROME2 twin stores (rounding after it sends ties at .5 the other way).
    stored = np.rint((values.astype(np.float64) - intercept) / slope)
    lo, hi = stored_range(info)
    if info.invert:
        stored = (lo + hi) - stored
    return np.clip(stored, lo, hi).astype(stored_dtype(info))


# ----------------------------------------------------------------------------------------------
# decoding through pydicom
def _pixel_array(ds: Dataset, syntax: str) -> np.ndarray:
    plugin = PREFERRED_PLUGIN.get(syntax)
    if plugin:
        try:
            return pydicom.pixels.pixel_array(ds, decoding_plugin=plugin)
        except Exception:  # plugin missing or failing on this file: let pydicom choose
            pass
    return ds.pixel_array


def read_pixels(path: str | Path) -> tuple[Dataset, PixelInfo, np.ndarray]:
    """Read a whole file and decode its frames: (dataset, its PixelInfo, float32 (n_frames, rows, cols)
    in scanner units). Goes through pydicom's decoders (every transfer syntax its plugins handle).

    Call it on files :func:`mrsr.data.dicom_header.read_dicom_header` accepted: their declared size
    was checked against the limits and the bytes present before this allocates anything.

    Raises:
        UnreadableDicom: with the one-line reason (not DICOM, truncated or corrupt pixel data, ...).
    """
    try:
        ds = read_dicom(path)
    except UnreadableDicom:
        raise
    except Exception as exc:  # the header was read before: what fails now is further on, in the pixel data
        raise UnreadableDicom(f"truncated or corrupt DICOM file: {type(exc).__name__}: {exc}") from None
    ts = ds.file_meta.get("TransferSyntaxUID")
    syntax = getattr(ts, "name", str(ts))
    try:
        arr = _pixel_array(ds, str(ts))
        info = pixel_info(ds)
    except Exception as exc:  # decoders raise NotImplementedError, ValueError, RuntimeError...
        raise UnreadableDicom(f"truncated or corrupt pixel data ({syntax}): {type(exc).__name__}: {exc}") from None
    if arr.size != info.n_frames * info.rows * info.cols:
        raise UnreadableDicom(f"pixel array shape {arr.shape} does not match {info.n_frames} frame(s) of "
                              f"{info.rows}x{info.cols}")
    return ds, info, to_scanner_units(arr.reshape(info.n_frames, info.rows, info.cols), info)


def decode_dicom_file(path: str | Path) -> np.ndarray | Rejected:
    """One file's frames as float32 (n_frames, rows, cols) in scanner units, or why not (:func:`read_pixels`)."""
    try:
        return read_pixels(path)[2]
    except UnreadableDicom as exc:
        return Rejected(str(path), str(exc))


# ----------------------------------------------------------------------------------------------
# native pixel data straight from the file (ingest's fast path)
_buffers = threading.local()  # per-thread scratch buffers: no fresh pages per file (page faults dominate)


def _scratch(name: str, nbytes: int) -> bytearray:
    buf = getattr(_buffers, name, None)
    if buf is None or len(buf) < nbytes:
        buf = bytearray(nbytes)
        setattr(_buffers, name, buf)
    return buf


def decode_native_into(path: str, info: PixelInfo, out: np.ndarray, slots: Sequence[int]) -> Rejected | None:
    """Native pixel data read straight from its file offset into ``out[slots]`` (one slot per frame).

    Same values as pydicom's ``pixel_array`` (unused high bits masked, or sign-extended), without
    parsing the file again or allocating per file. When ``out`` has the file's own (native-endian)
    dtype and no value transform applies, the bytes go directly into ``out``: one read, one in-place
    mask, nothing else (the common case for integer series).

    Args:
        path: the file; ``info.offset`` locates its pixel data.
        info: the file's decoding parameters.
        out: (n, rows, cols) series array, float32 or an :func:`exact_integer_dtype`.
        slots: the row of ``out`` for each frame of the file, in frame order.
    """
    count = info.n_frames * info.rows * info.cols
    dtype = np.dtype(f"{info.byteorder}{'i' if info.signed else 'u'}{info.bits_allocated // 8}")
    need = count * dtype.itemsize
    if info.length is not None and info.length < need:  # before any buffer is sized by the header
        return Rejected(path, f"truncated or corrupt pixel data (native): {info.length} of {need} bytes declared")
    first = slots[0] if len(slots) else 0
    direct = (
        out.dtype == dtype
        and dtype.isnative
        and not info.invert
        and all(r == (1.0, 0.0) for r in info.rescale)
        and list(slots) == list(range(first, first + info.n_frames))  # frames land on consecutive rows
    )
    raw = memoryview(out[first : first + info.n_frames]).cast("B") if direct else memoryview(_scratch("raw", need))[:need]
    try:
        with open(path, "rb", buffering=0) as fh:
            fh.seek(info.offset)
            got = 0
            while got < need and (n := fh.readinto(raw[got:])):
                got += n
    except OSError as exc:
        return Rejected(path, f"unreadable file: {exc}")
    if got < need:
        return Rejected(path, f"truncated or corrupt pixel data (native): {got} of {need} bytes present")
    unused = info.bits_allocated - info.bits_stored
    if direct:
        if unused > 0:
            _mask_unused_bits(out[first : first + info.n_frames], info, out[first : first + info.n_frames])
        return None
    arr = np.frombuffer(raw, dtype=dtype).reshape(info.n_frames, info.rows, info.cols)
    if unused > 0:
        tmp = np.frombuffer(_scratch("bits", need), dtype=dtype.newbyteorder("="), count=count).reshape(arr.shape)
        _mask_unused_bits(arr, info, tmp)
        arr = tmp
    _convert_into(arr, info, out, slots)
    return None


def _mask_unused_bits(arr: np.ndarray, info: PixelInfo, out: np.ndarray) -> None:
    """As pydicom does with bits above BitsStored: mask them (unsigned) or sign-extend (signed)."""
    unused = info.bits_allocated - info.bits_stored
    if info.signed:
        np.left_shift(arr, unused, out=out)
        np.right_shift(out, unused, out=out)
    else:
        np.bitwise_and(arr, (1 << info.bits_stored) - 1, out=out)
