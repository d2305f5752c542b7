"""pydicom writers for test DICOM: real files in every transfer syntax the reader must handle.

Why hand-made files: the reader's job is to survive what scanners and archives really write, so the
tests write byte-level DICOM (compressed with pydicom's own encoders where they exist) instead of
mocking pydicom. Two syntaxes have no encoder in pydicom or its plugins: JPEG baseline is written
with Pillow, and JPEG lossless (process 14, SV1) with the tiny encoder below (:func:`jpeg_lossless_sv1`).
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    UID,
    generate_uid,
)

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def mr_dataset(
    pixels: np.ndarray,
    *,
    series_uid: str,
    patient_id: str = "PGBM-001",
    description: str = "T1post",
    position: tuple[float, float, float] = (0.0, 0.0, 0.0),
    orientation: tuple[float, ...] = AXIAL,
    instance: int = 1,
    spacing: tuple[float, float] = (0.9, 0.8),
    slope: float | None = None,
    intercept: float | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str = "MR",
    sop_class: str = MR_STORAGE,
) -> Dataset:
    """A single-frame MR Image Storage dataset holding ``pixels`` (2-D; int8/16 or uint8/16) natively."""
    pixels = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    set_pixels(ds, pixels, photometric=photometric, bits_stored=bits_stored)
    return ds


def set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None) -> None:
    """Native little-endian pixel data for a (rows, cols) or (frames, rows, cols) integer array."""
    pixels = np.ascontiguousarray(pixels)
    bits = pixels.dtype.itemsize * 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()


def save(ds: Dataset, path: str | Path, syntax: UID = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` to ``path`` in ``syntax`` (compressing or byte-swapping the pixel data as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = copy.deepcopy(ds)
    if "PixelData" not in ds or syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        ds.file_meta.TransferSyntaxUID = syntax  # native, implicit or deflated: pydicom writes them
        ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
        return path
    pixels = ds.pixel_array
    if syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
        ds.compress(syntax, pixels)
    elif syntax == JPEGBaseline8Bit:
        ds.PixelData = encapsulate([_pillow_jpeg(f) for f in _frames(pixels)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == JPEGLosslessSV1:
        ds.PixelData = encapsulate([jpeg_lossless_sv1(f, int(ds.BitsStored)) for f in _frames(pixels)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == ExplicitVRBigEndian:
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">")).tobytes()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(path, implicit_vr=False, little_endian=False, enforce_file_format=True)
        return path
    else:
        raise ValueError(f"no writer for {syntax.name}")
    ds.save_as(path, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return path


def _frames(pixels: np.ndarray) -> list[np.ndarray]:
    return list(pixels) if pixels.ndim == 3 else [pixels]


def _pillow_jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame.astype(np.uint8), mode="L").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def jpeg_lossless_sv1(frame: np.ndarray, precision: int) -> bytes:
    """Encode one unsigned 2-D frame as JPEG lossless, process 14, selection value 1 (ITU T.81 H).

    One Huffman table gives every difference category 0-16 a 5-bit code; simple, valid, and enough
    to exercise the decoder (the compression ratio does not matter for tests).
    """
    rows, cols = frame.shape
    x = frame.astype(np.int64)
    pred = np.empty_like(x)
    pred[0, 0] = 1 << (precision - 1)
    pred[0, 1:] = x[0, :-1]
    pred[1:, 0] = x[:-1, 0]
    pred[1:, 1:] = x[1:, :-1]
    diff = (x - pred) % 65536
    diff = np.where(diff >= 32768, diff - 65536, diff).ravel()
    bits: list[str] = []
    for d in diff.tolist():
        ssss = 16 if d == -32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            v = d if d > 0 else d + (1 << ssss) - 1
            bits.append(format(v, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        b = int(stream[i : i + 8], 2)
        data.append(b)
        if b == 0xFF:
            data.append(0x00)
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sof = bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, 1, 0, 0])

    def seg(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(body) + 2).to_bytes(2, "big") + body

    return b"\xff\xd8" + seg(0xC3, sof) + seg(0xC4, dht) + seg(0xDA, sos) + bytes(data) + b"\xff\xd9"


def enhanced_mr_dataset(
    frames: np.ndarray,
    *,
    series_uid: str,
    positions: list[tuple[float, float, float]],
    slopes: list[float] | None = None,
    intercept: float = 0.0,
    spacing: tuple[float, float] = (0.5, 0.5),
    patient_id: str = "PGBM-002",
) -> Dataset:
    """An Enhanced MR multi-frame dataset: per-frame positions (and rescale), shared orientation/spacing."""
    ds = mr_dataset(frames[0], series_uid=series_uid, patient_id=patient_id, description="multiframe",
                    sop_class=ENHANCED_MR_STORAGE)
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, kw)
    set_pixels(ds, frames)
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = 5.0
    shared.PlaneOrientationSequence = [orient]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for i, pos in enumerate(positions):
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = list(pos)
        item.PlanePositionSequence = [plane]
        if slopes is not None:
            tr = Dataset()
            tr.RescaleSlope = slopes[i]
            tr.RescaleIntercept = intercept
            tr.RescaleType = "US"
            item.PixelValueTransformationSequence = [tr]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    return ds


def new_uid() -> str:
    return generate_uid()


def ramp(i: int, dtype=np.uint16, n: int = 48) -> np.ndarray:
    """A distinct, non-zero image per slice index (value encodes the slice: ordering is checkable).

    48x48 16-bit is 4.6 kB of pixel data: above the reader's deferral size, so native files take
    the fast path (direct read at the pixel data offset), as real MR slices do.
    """
    base = np.add.outer(np.arange(n), 2 * np.arange(n)) % 97
    return (base + 100 * (i + 1)).astype(dtype)


def reject_cases(tmp_path: Path, good_uid: str) -> dict[str, tuple[Path, str]]:
    """Files ingest and upscale must both refuse, in ``tmp_path/bad``: name -> (file, expected substring of the reason).

    Args:
        tmp_path: the folder to write them in.
        good_uid: the series UID of the caller's good files (some bad files claim it).
    """
    d = tmp_path / "bad"
    d.mkdir()
    cases: dict[str, tuple[Path, str]] = {}
    (d / "notes.dcm").write_text("these are my notes, not DICOM\n" * 20)
    cases["text"] = (d / "notes.dcm", "not a DICOM file")
    sr = mr_dataset(ramp(0), series_uid=new_uid(), modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11")
    for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
               "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(sr, kw)
    cases["no pixels"] = (save(sr, d / "sr.dcm"), "not an image: no pixel data")
    cases["CT"] = (save(mr_dataset(ramp(0), series_uid=new_uid(), modality="CT"), d / "ct.dcm"), "not MR: Modality is CT")
    mask = mr_dataset(ramp(0), series_uid=new_uid(), description="MaskTumor", sop_class=SC_STORAGE)
    cases["mask"] = (save(mask, d / "mask.dcm"), "Secondary Capture")
    rgb = mr_dataset(ramp(0), series_uid=new_uid())
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.BitsAllocated = rgb.BitsStored = 8
    rgb.HighBit, rgb.PixelData = 7, np.zeros((48, 48, 3), np.uint8).tobytes()
    cases["rgb"] = (save(rgb, d / "rgb.dcm"), "colour image (RGB, SamplesPerPixel=3)")
    palette = mr_dataset(ramp(0), series_uid=new_uid(), photometric="PALETTE COLOR")  # one sample, but colour
    cases["palette"] = (save(palette, d / "palette.dcm"), "colour image (PALETTE COLOR, SamplesPerPixel=1)")
    line = mr_dataset(np.arange(1, 25, dtype=np.uint16)[None, :], series_uid=new_uid())
    cases["1-D"] = (save(line, d / "line.dcm"), "not a 2-D image: Rows=1")
    full = save(mr_dataset(ramp(5), series_uid=good_uid, position=(0, 0, 99.0)), d / "full.dcm").read_bytes()
    (d / "trunc_pixels.dcm").write_bytes(full[:-300])
    cases["truncated pixels"] = (d / "trunc_pixels.dcm", "truncated or corrupt pixel data")
    (d / "trunc_header.dcm").write_bytes(full[:200])
    cases["truncated header"] = (d / "trunc_header.dcm", "corrupt or truncated DICOM header")
    (d / "cut_before_pixels.dcm").write_bytes(full[: full.find(b"\xe0\x7f\x10\x00")])
    cases["cut before pixels"] = (d / "cut_before_pixels.dcm", "truncated or corrupt pixel data")
    rle = bytearray(save(mr_dataset(ramp(6), series_uid=good_uid, position=(0, 0, 98.0)), d / "rle.dcm", RLELossless).read_bytes())
    frame_item = rle.find(b"\xfe\xff\x00\xe0", rle.find(b"\xfe\xff\x00\xe0") + 8)  # 2nd item: the frame
    rle[frame_item + 8 : frame_item + 12] = (15).to_bytes(4, "little")  # RLE header: 15 segments for 16-bit mono
    (d / "corrupt_rle.dcm").write_bytes(bytes(rle))
    cases["corrupt compressed"] = (d / "corrupt_rle.dcm", "truncated or corrupt pixel data (RLE Lossless)")
    odd = mr_dataset(np.ones((12, 12), np.uint16), series_uid=good_uid, position=(0, 0, 97.0))
    cases["odd size"] = (save(odd, d / "odd.dcm"), "image size 12x12 differs from the rest of series")
    sagittal = mr_dataset(ramp(7), series_uid=good_uid, position=(0, 0, 96.0), orientation=(0, 1, 0, 0, 0, -1))
    cases["other plane"] = (save(sagittal, d / "sag.dcm"), "orientation (0.0, 1.0, 0.0, 0.0, 0.0, -1.0) differs")
    return cases


__all__ = [
    "AXIAL", "DeflatedExplicitVRLittleEndian", "ExplicitVRBigEndian", "ExplicitVRLittleEndian",
    "ImplicitVRLittleEndian", "JPEG2000Lossless", "JPEGBaseline8Bit", "JPEGLSLossless", "JPEGLosslessSV1",
    "MR_STORAGE", "RLELossless", "SC_STORAGE", "enhanced_mr_dataset", "jpeg_lossless_sv1", "mr_dataset",
    "new_uid", "ramp", "reject_cases", "save", "set_pixels",
]
