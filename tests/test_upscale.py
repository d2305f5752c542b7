"""``mrsr upscale``: DICOM and NIfTI in, same format out, geometry and intensities right.

Every input is generated here (DICOM with pydicom, NIfTI with nibabel, weights from a small randomly
initialised model); dcm2niix (the PyPI package's binary) checks the DICOM geometry independently.
"""

from __future__ import annotations

import shutil
import subprocess
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from mrsr.cli import main
from mrsr.inference import Upscaler, receptive_radius
from mrsr.models import build_model
from mrsr.upscale_io import NiftiJob, Provenance, process_nifti, upscaled_affine
from upscale_fixtures import tiny_model


def reference(values: np.ndarray, norm: float, lo: float = -np.inf, scale: int = 2) -> np.ndarray:
    """The model applied untiled to one slice of physical intensities (independent of upscale.py),
    clipped to the input series' range [lo, norm] (``norm`` is the series maximum)."""
    model = tiny_model(scale)
    with torch.no_grad():
        out = model(torch.from_numpy((values / norm).astype(np.float32))[None, None])
    return np.clip(out[0, 0].double().numpy() * norm, lo, norm)


def phantom(rows: int, cols: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth blob plus texture, values in about [0, 1]."""
    y, x = np.mgrid[:rows, :cols]
    blob = np.exp(-(((y - rows / 2) / (rows / 3)) ** 2 + ((x - cols / 2 - k) / (cols / 3)) ** 2))
    return 0.8 * blob + 0.2 * rng.random((rows, cols))


# ------------------------------------------------------------------------------------- DICOM inputs

ROW_DIR = np.array([np.cos(0.3), np.sin(0.3), 0.0])
COL_DIR = np.array([-np.sin(0.3) * np.cos(0.2), np.cos(0.3) * np.cos(0.2), np.sin(0.2)])


def dicom_slice(k: int, pixels: np.ndarray, series_uid: str, study_uid: str, for_uid: str, **over) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
    ds.Modality, ds.Manufacturer = "MR", "mrsr-test"
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "Test^Phantom", "P001", "20240102", "101010"
    ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 7, k + 1, "T1 phantom"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = 12.5, 500, 3
    ds.SliceThickness, ds.SpacingBetweenSlices = 3.0, 3.0
    ds.PixelSpacing = [0.9, 1.1]  # row spacing (along COL_DIR), column spacing (along ROW_DIR)
    ds.ImageOrientationPatient = [float(v) for v in (*ROW_DIR, *COL_DIR)]
    origin = np.array([-20.0, -30.0, 15.0]) + 3.0 * k * np.cross(ROW_DIR, COL_DIR)
    ds.ImagePositionPatient = [round(float(v), 5) for v in origin]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.5, -20.0
    ds.add_new(0x00291010, "LO", "private kept")
    ds.PixelData = pixels.astype("<u2").tobytes()
    for key, value in over.items():
        setattr(ds, key, value)
    return ds


def make_series(folder: Path, n: int = 5, rows: int = 20, cols: int = 24, seed: int = 0, rle: tuple = (1,),
                implicit: tuple = (), signed: bool = False) -> list[Path]:
    """Write an oblique MR series: uint16 12-bit with a rescale, or (``signed``) int16 16-bit.

    Slices numbered in ``rle`` are RLE-compressed, those in ``implicit`` Implicit VR Little Endian.
    """
    rng = np.random.default_rng(seed)
    uids = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        pixels = np.round(phantom(rows, cols, k, rng) * 3000)
        if signed:
            ds = dicom_slice(k, (pixels - 1000).astype(np.int16), *uids, BitsStored=16, HighBit=15,
                             PixelRepresentation=1, RescaleSlope=1, RescaleIntercept=0)
        else:
            ds = dicom_slice(k, pixels.astype(np.uint16), *uids)
        if k in rle:
            ds.compress(RLELossless)
        if k in implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_cli(*args) -> int:
    return main(["upscale", *map(str, args)])


# ------------------------------------------------------------------------------------------ tiling


def test_receptive_radius_covers_the_true_field():
    assert receptive_radius(build_model("bicubic", 2), 2) == 2
    # entry conv 1 + 2 units x 2 convs + deconvolution ceil(4 / 2) = 7 LR pixels (upper bound 9)
    assert 7 <= receptive_radius(tiny_model(), 2) <= 9


def test_tiles_agree_with_the_untiled_result_on_a_1024_slice():
    model = tiny_model(feature_deconv_init="he")
    image = np.random.default_rng(1).random((1024, 1024), dtype=np.float32)
    whole = Upscaler(model, tile=4096)(image)
    tiled = Upscaler(model, tile=200)(image)  # uneven tiles, auto overlap
    assert whole.shape == tiled.shape == (2048, 2048)
    assert np.abs(tiled - whole).max() <= 1e-4 * np.abs(whole).max()
    # the overlap is what makes them agree: with less context than the receptive field they differ
    crop, short = image[:300, :300], Upscaler(model, tile=100)
    short.overlap = 3
    reference_crop = Upscaler(model, tile=4096)(crop)
    assert np.abs(Upscaler(model, tile=100)(crop) - reference_crop).max() <= 1e-4 * np.abs(reference_crop).max()
    assert np.abs(short(crop) - reference_crop).max() > 1e-3 * np.abs(reference_crop).max()
    with pytest.raises(ValueError, match="receptive radius"):
        Upscaler(model, tile=200, overlap=3)


def test_bf16_autocast_is_close_to_float32():
    model = tiny_model()
    image = np.random.default_rng(2).random((40, 36), dtype=np.float32)
    exact = Upscaler(model)(image)
    fast = Upscaler(model, bf16=True)(image)
    assert fast.shape == exact.shape and fast.dtype == np.float32
    assert np.abs(fast - exact).max() < 0.05 * np.abs(exact).max()


# ------------------------------------------------------------------------------------------- NIfTI


def oblique_affine(zooms=(0.9, 1.1, 3.0)) -> np.ndarray:
    rot = np.column_stack([ROW_DIR, COL_DIR, np.cross(ROW_DIR, COL_DIR)])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(zooms)
    affine[:3, 3] = [-20.0, -30.0, 15.0]
    return affine


def fov_corners(affine: np.ndarray, shape) -> np.ndarray:
    """World coordinates of the outer corners of the first two axes' voxel grid (edges, not centres)."""
    nx, ny = shape[:2]
    corners = np.array([[i, j, 0, 1] for i in (-0.5, nx - 0.5) for j in (-0.5, ny - 0.5)], float)
    return (affine @ corners.T).T[:, :3]


def test_nifti_int16_with_scaling(tmp_path, weights):
    rng = np.random.default_rng(3)
    raw = np.stack([np.round(phantom(18, 22, k, rng) * 2000) for k in range(4)], axis=-1).astype(np.int16)
    img = nib.Nifti1Image(raw, oblique_affine())
    img.header.set_slope_inter(0.5, 10.0)
    img.header.set_data_dtype(np.int16)
    src = tmp_path / "in" / "T1.nii.gz"
    src.parent.mkdir()
    nib.save(img, src)

    assert run_cli("--model", weights, "--out", tmp_path / "out", "--tile", 8, src) == 0
    out = nib.load(tmp_path / "out" / "T1_x2.nii.gz")
    assert out.shape == (36, 44, 4)
    assert out.get_data_dtype() == np.int16
    assert (out.dataobj.slope, out.dataobj.inter) == (0.5, 10.0)
    np.testing.assert_allclose(out.header.get_zooms(), (0.45, 0.55, 3.0), rtol=1e-6)
    np.testing.assert_allclose(out.affine, upscaled_affine(oblique_affine(), 2), atol=1e-5)
    # same field of view in world coordinates
    np.testing.assert_allclose(fov_corners(out.affine, out.shape), fov_corners(oblique_affine(), raw.shape), atol=1e-4)
    assert out.header.get_qform(coded=True)[1] == img.header.get_qform(coded=True)[1]
    # intensities: model(values / max) * max, stored back with the same slope/intercept
    values = raw.astype(np.float64) * 0.5 + 10.0
    norm = values.max()
    stored = np.asarray(out.dataobj.get_unscaled())
    for k in range(4):
        expected = np.clip(np.rint((reference(values[..., k], norm, values.min()) - 10.0) / 0.5), -32768, 32767)
        assert np.abs(stored[..., k] - expected).max() <= 1
        assert np.mean(stored[..., k] == expected) > 0.99
    assert np.asarray(out.dataobj).max() > 0.5 * norm  # not all clipped away


def test_nifti_float_4d_keeps_dtype(tmp_path, weights):
    data = np.random.default_rng(4).random((10, 12, 3, 2)).astype(np.float32) * 100
    src = tmp_path / "fmri.nii"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), src)
    assert run_cli("--model", weights, "--out", tmp_path / "out", src) == 0
    out = nib.load(tmp_path / "out" / "fmri_x2.nii")
    assert out.shape == (20, 24, 3, 2) and out.get_data_dtype() == np.float32
    got = out.get_fdata()
    for t in range(2):
        for k in range(3):
            np.testing.assert_allclose(got[..., k, t], reference(data[..., k, t], data.max(), data.min()), rtol=1e-4, atol=1e-3)


def test_nifti_streams_slice_by_slice(tmp_path):
    """A 256x256x32 int16 volume at 2x: peak memory stays at a few slices, not the volume."""
    shape = (256, 256, 32)
    data = np.random.default_rng(5).integers(0, 1000, size=shape, dtype=np.int16)
    src = tmp_path / "big.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), src)
    del data
    seen = []

    def nearest(slice_: np.ndarray) -> np.ndarray:  # a stand-in model: pixel replication
        seen.append(slice_.shape)
        return np.kron(slice_, np.ones((2, 2), np.float32))

    job = NiftiJob(src, tmp_path / "big_x2.nii.gz")
    tracemalloc.start()
    process_nifti(job, nearest, Provenance(2, "nearest", src))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert set(seen) == {(256, 256)} and len(seen) == 32
    # the 2x volume is 512*512*32*2 bytes = 16 MiB as int16, 64 MiB as float32: we hold far less
    assert peak < 12 * 2**20, peak / 2**20
    out = nib.load(job.out)
    assert out.shape == (512, 512, 32)
    np.testing.assert_array_equal(np.asarray(out.dataobj[::2, ::2, 5]), np.asarray(nib.load(src).dataobj[..., 5]))


# ------------------------------------------------------------------------------------------- DICOM


def dcm2niix_volume(folder: Path, out: Path) -> nib.Nifti1Image:
    exe = shutil.which("dcm2niix") or __import__("dcm2niix").bin
    out.mkdir(parents=True)
    subprocess.run([exe, "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(folder)], check=True,
                   capture_output=True)
    files = sorted(out.glob("*.nii"))
    assert len(files) == 1, files
    return nib.load(files[0])


def test_dicom_series_geometry_identity_and_intensities(tmp_path, weights):
    src = make_series(tmp_path / "in" / "study", n=5, rle=(1,), implicit=(3,))
    assert pydicom.dcmread(src[1]).file_meta.TransferSyntaxUID == RLELossless
    code = run_cli("--model", weights, "--out", tmp_path / "out", "--tile", 10, tmp_path / "in")
    assert code == 0
    out_dir = tmp_path / "out" / "7_T1_phantom_x2"
    outs = sorted(out_dir.glob("*.dcm"))
    assert [p.name for p in outs] == [p.name for p in src]
    ins = [pydicom.dcmread(p) for p in src]
    res = [pydicom.dcmread(p) for p in outs]
    new_series = {str(d.SeriesInstanceUID) for d in res}
    assert len(new_series) == 1 and new_series != {str(ins[0].SeriesInstanceUID)}
    assert len({str(d.SOPInstanceUID) for d in res} | {str(d.SOPInstanceUID) for d in ins}) == 10
    norm = max(float(d.pixel_array.max()) * 1.5 - 20 for d in ins)
    lo = min(float(d.pixel_array.min()) * 1.5 - 20 for d in ins)
    for a, b in zip(ins, res):
        assert b.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert b.file_meta.MediaStorageSOPInstanceUID == b.SOPInstanceUID
        assert (b.Rows, b.Columns) == (40, 48)
        np.testing.assert_allclose([float(v) for v in b.PixelSpacing], [0.45, 0.55])
        assert list(b.ImageType) == ["DERIVED", "PRIMARY", "M", "ND"]
        assert b.SeriesDescription == "T1 phantom [mrsr x2]"
        assert "proposed" in b.DerivationDescription and weights.name in b.DerivationDescription
        assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
        assert b.SeriesNumber == a.SeriesNumber + 1000 * 2  # a number of its own (docs/upscale.md's rule)
        for key in ("PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "EchoTime",
                    "InstanceNumber", "SliceThickness", "RescaleSlope", "RescaleIntercept", "BitsStored"):
            assert b[key].value == a[key].value, key
        private = b[0x00291010].value  # UN bytes when the source was implicit VR: its VR is unknown
        assert private == a[0x00291010].value and private in ("private kept", b"private kept")
        expected = np.clip(np.rint((reference(a.pixel_array * 1.5 - 20.0, norm, lo) + 20.0) / 1.5), 0, 4095)
        got = b.pixel_array.astype(np.float64)
        assert np.abs(got - expected).max() <= 1 and np.mean(got == expected) > 0.99
        assert 2500 < got.max() <= 4095
    # geometry as a third party sees it
    before = dcm2niix_volume(tmp_path / "in", tmp_path / "nii_in")
    after = dcm2niix_volume(out_dir, tmp_path / "nii_out")
    assert after.shape == (2 * before.shape[0], 2 * before.shape[1], before.shape[2])
    np.testing.assert_allclose(after.header.get_zooms()[:2], np.array(before.header.get_zooms()[:2]) / 2, rtol=1e-4)
    assert after.header.get_zooms()[2] == pytest.approx(before.header.get_zooms()[2], rel=1e-4)
    np.testing.assert_allclose(fov_corners(after.affine, after.shape), fov_corners(before.affine, before.shape),
                               atol=1e-3)


def test_enhanced_multiframe_dicom(tmp_path, weights):
    """Enhanced MR: one file, three frames, geometry and rescale in the functional groups."""
    rng = np.random.default_rng(7)
    frames = np.stack([np.round(phantom(16, 18, k, rng) * 1500) for k in range(3)]).astype(np.uint16)
    ds = dicom_slice(0, frames[0], generate_uid(), generate_uid(), generate_uid())
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    for key in ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "RescaleSlope",
                "RescaleIntercept", "SliceThickness"):
        delattr(ds, key)
    ds.NumberOfFrames = 3
    meas, ori, pvt, shared = Dataset(), Dataset(), Dataset(), Dataset()
    meas.PixelSpacing, meas.SliceThickness = [0.9, 1.1], 3.0
    ori.ImageOrientationPatient = [float(v) for v in (*ROW_DIR, *COL_DIR)]
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 2, 5, "US"
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [meas], [ori]
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    origins = [np.array([-20.0, -30.0, 15.0]) + 3.0 * k * np.cross(ROW_DIR, COL_DIR) for k in range(3)]
    per = []
    for origin in origins:
        pos, item = Dataset(), Dataset()
        pos.ImagePositionPatient = [round(float(v), 5) for v in origin]
        item.PlanePositionSequence = [pos]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    ds.PixelData = frames.astype("<u2").tobytes()
    src = tmp_path / "enhanced.dcm"
    ds.save_as(src, enforce_file_format=True)

    assert run_cli("--model", weights, "--out", tmp_path / "out", src) == 0
    out = pydicom.dcmread(tmp_path / "out" / "enhanced_x2.dcm")
    assert (out.NumberOfFrames, out.Rows, out.Columns) == (3, 32, 36)
    group = out.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in group.PixelMeasuresSequence[0].PixelSpacing], [0.45, 0.55])
    for item, origin in zip(out.PerFrameFunctionalGroupsSequence, origins):
        moved = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        # first pixel centre moves by (1/2 - 1)/2 of an old pixel along rows and columns
        np.testing.assert_allclose(moved, np.round(origin, 5) - 0.25 * (1.1 * ROW_DIR + 0.9 * COL_DIR), atol=1e-5)
    norm = frames.max() * 2.0 + 5.0
    for k in range(3):
        expected = np.clip(np.rint((reference(frames[k] * 2.0 + 5.0, norm, frames.min() * 2.0 + 5.0) - 5.0) / 2.0), 0, 4095)
        assert np.abs(out.pixel_array[k].astype(np.float64) - expected).max() <= 1
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in")
    before = dcm2niix_volume(tmp_path / "in", tmp_path / "nii_in")
    after = dcm2niix_volume(tmp_path / "out", tmp_path / "nii_out")
    assert after.shape == (2 * before.shape[0], 2 * before.shape[1], 3)
    np.testing.assert_allclose(fov_corners(after.affine, after.shape), fov_corners(before.affine, before.shape),
                               atol=1e-3)


def test_monochrome1_series_and_its_monochrome2_twin_display_the_same(tmp_path, weights):
    """MONOCHROME1 (low stored values display white) is read as its displayed image, as ingest reads it
    for training, and written back as MONOCHROME1: the output displays exactly as the MONOCHROME2
    twin's output (stored values 4095 - s, same rescale)."""
    rng = np.random.default_rng(11)
    uids = {name: (generate_uid(), generate_uid(), generate_uid()) for name in ("m1", "m2")}
    for k in range(2):
        twin = np.round(phantom(16, 18, k, rng) * 3000).astype(np.uint16)  # MONOCHROME2: bright = high
        for name, stored, photometric in (("m1", 4095 - twin, "MONOCHROME1"), ("m2", twin, "MONOCHROME2")):
            ds = dicom_slice(k, stored, *uids[name], PhotometricInterpretation=photometric,
                             SeriesDescription=f"T1 {name}")
            (tmp_path / "in" / name).mkdir(parents=True, exist_ok=True)
            ds.save_as(tmp_path / "in" / name / f"IM{k}.dcm", enforce_file_format=True)
    assert run_cli("--model", weights, "--out", tmp_path / "out", tmp_path / "in" / "m1", tmp_path / "in" / "m2") == 0
    for k in range(2):
        m1 = pydicom.dcmread(tmp_path / "out" / "7_T1_m1_x2" / f"IM{k}.dcm")
        m2 = pydicom.dcmread(tmp_path / "out" / "7_T1_m2_x2" / f"IM{k}.dcm")
        assert m1.PhotometricInterpretation == "MONOCHROME1" and m2.PhotometricInterpretation == "MONOCHROME2"
        assert (m1.RescaleSlope, m1.RescaleIntercept, m1.BitsStored) == (1.5, -20.0, 12)
        # displayed: a MONOCHROME1 viewer shows 4095 - stored (BitsStored 12) where MONOCHROME2 shows stored
        np.testing.assert_array_equal(4095 - m1.pixel_array.astype(np.int32), m2.pixel_array)
        assert len(np.unique(m2.pixel_array)) > 100  # a real image, not a clipped constant


def test_per_frame_rescale_overrides_a_stale_top_level_one(tmp_path, weights):
    """Enhanced MR: each frame's own Rescale Slope/Intercept (per-frame functional groups) scale it,
    in and out, not a converter's leftover top-level copy; the same values ingest reads."""
    from dicom_fixtures import enhanced_mr_dataset

    from mrsr.data.dicom_pixels import decode_dicom_file

    rng = np.random.default_rng(12)
    frames = np.stack([np.round(phantom(16, 18, k, rng) * 1000) for k in range(3)]).astype(np.uint16)
    slopes, intercept = [1.0, 2.0, 3.0], -5.0
    ds = enhanced_mr_dataset(frames, series_uid=generate_uid(), positions=[(0, 0, 3.0 * k) for k in range(3)],
                             slopes=slopes, intercept=intercept)
    ds.RescaleSlope, ds.RescaleIntercept = 7.0, 100.0  # stale: contradicts every frame's own values
    src = tmp_path / "enhanced.dcm"
    ds.save_as(src, enforce_file_format=True)
    values = [frames[k] * slopes[k] + intercept for k in range(3)]
    np.testing.assert_array_equal(decode_dicom_file(src), np.stack(values))  # what ingest reads
    assert run_cli("--model", weights, "--out", tmp_path / "out", src) == 0
    out = pydicom.dcmread(tmp_path / "out" / "enhanced_x2.dcm")
    norm, lo = max(v.max() for v in values), min(v.min() for v in values)
    for k in range(3):
        expected = np.clip(np.rint((reference(values[k], norm, lo) - intercept) / slopes[k]), 0, 65535)
        got = out.pixel_array[k].astype(np.float64)
        assert np.abs(got - expected).max() <= 1 and np.mean(got == expected) > 0.99, k
        assert out.PerFrameFunctionalGroupsSequence[k].PixelValueTransformationSequence[0].RescaleSlope == slopes[k]


def test_upscale_and_ingest_refuse_a_bad_file_with_the_same_reason(tmp_path):
    """One reader: every file that both refuse is refused for the same reason, in the same words."""
    from mrsr.data.dicom import scan_dicom_file
    from mrsr.upscale_io import collect_inputs

    from dicom_fixtures import reject_cases

    cases = reject_cases(tmp_path, generate_uid())
    jobs, skipped, _ = collect_inputs([tmp_path / "bad"], tmp_path / "out", "_x2")
    reasons = {Path(path).name: reason for path, reason in skipped}
    shared = ["text", "no pixels", "rgb", "palette", "1-D", "truncated pixels", "truncated header", "cut before pixels"]
    for name in shared:
        path, phrase = cases[name]
        assert phrase in reasons[path.name] and reasons[path.name] == scan_dicom_file(path).reason, name
    # not refused by upscale: other modalities, Secondary Capture, and what only a series of many files shows
    # (other sizes or planes) or only decoding finds (corrupt compressed data, skipped when written)
    assert not {cases[n][0].name for n in ("CT", "mask", "odd size", "other plane", "corrupt compressed")} & set(reasons)


def test_single_signed_dicom_files_named_after_them(tmp_path, weights):
    src = make_series(tmp_path / "in", n=2, rle=(), signed=True)
    assert run_cli("--model", weights, "--out", tmp_path / "out", *src) == 0
    outs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outs] == ["IM0000_x2.dcm", "IM0001_x2.dcm"]
    ins, res = [pydicom.dcmread(p) for p in src], [pydicom.dcmread(p) for p in outs]
    assert len({str(d.SeriesInstanceUID) for d in res}) == 1  # files of one series share one new series
    norm = max(float(d.pixel_array.max()) for d in ins)
    lo = min(float(d.pixel_array.min()) for d in ins)
    for a, b in zip(ins, res):
        assert b.PixelRepresentation == 1 and b.pixel_array.dtype == np.int16
        expected = np.clip(np.rint(reference(a.pixel_array.astype(np.float64), norm, lo)), -32768, 32767)
        got = b.pixel_array.astype(np.float64)
        assert np.abs(got - expected).max() <= 1 and got.min() < -500


def test_bad_inputs_are_named_and_the_rest_is_written(tmp_path, weights, capsys):
    good = make_series(tmp_path / "in" / "good", n=2, rle=())
    bad = tmp_path / "in" / "bad"
    bad.mkdir()
    uids = generate_uid(), generate_uid(), generate_uid()
    # RGB
    rgb = dicom_slice(0, np.zeros((4, 4), np.uint16), *uids)
    rgb.SamplesPerPixel, rgb.PhotometricInterpretation, rgb.PlanarConfiguration = 3, "RGB", 0
    rgb.BitsAllocated, rgb.BitsStored, rgb.HighBit = 8, 8, 7
    rgb.PixelData = bytes(4 * 4 * 3)
    rgb.save_as(bad / "rgb.dcm", enforce_file_format=True)
    # not an image: a dataset without pixel data
    sr = pydicom.Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID, sr.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    sr.file_meta.MediaStorageSOPClassUID, sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPClassUID, sr.SOPInstanceUID
    sr.Modality, sr.SeriesInstanceUID = "SR", generate_uid()
    sr.save_as(bad / "report.dcm", enforce_file_format=True)
    # a transfer syntax nobody can decode (same length as Explicit VR Little Endian + pad)
    odd = dicom_slice(0, np.ones((4, 4), np.uint16), *uids)
    odd.save_as(bad / "odd_ts.dcm", enforce_file_format=True)
    blob = (bad / "odd_ts.dcm").read_bytes()
    assert blob.count(b"1.2.840.10008.1.2.1\x00") == 1
    (bad / "odd_ts.dcm").write_bytes(blob.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.826.0.1.9999.771"))
    # unreadable
    (bad / "notes.bin").write_text("not an image")
    cut = make_series(tmp_path / "cut", n=1, rle=())[0].read_bytes()
    (bad / "truncated.dcm").write_bytes(cut[: len(cut) - 300])
    (bad / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")

    code = run_cli("--model", weights, "--out", tmp_path / "out", tmp_path / "in", tmp_path / "missing.dcm")
    assert code == 2
    err = capsys.readouterr()
    text = err.err + err.out
    for name, reason in [("rgb.dcm", "colour image (RGB"), ("report.dcm", "not an image"),
                         ("odd_ts.dcm", "1.2.826.0.1.9999.771"), ("notes.bin", "not a DICOM file"),
                         ("broken.nii.gz", "unreadable NIfTI"), ("missing.dcm", "no such file"),
                         ("truncated.dcm", "truncated or corrupt pixel data")]:
        line = next((ln for ln in text.splitlines() if name in ln and ln.strip().startswith("skipped")), "")
        assert reason in line, (name, text)
    assert "transfer syntax" in text and "skipped 7" in text
    written = sorted((tmp_path / "out").rglob("*.dcm"))  # series names collide: 7_T1_phantom_x2[_2]
    assert [p.name for p in written] == [p.name for p in good]
    assert {str(pydicom.dcmread(p).SeriesInstanceUID) for p in written} != {str(pydicom.dcmread(good[0]).SeriesInstanceUID)}


def test_model_scale_mismatch_is_refused(tmp_path, weights, capsys):
    src = make_series(tmp_path / "in", n=1, rle=())
    assert run_cli("--model", weights, "--scale", 3, "--out", tmp_path / "out", *src) == 2
    err = capsys.readouterr().err
    assert "trained for x2" in err and "--scale 3" in err and weights.name in err
    assert not (tmp_path / "out").exists()


def test_pickled_weights_are_refused(tmp_path, capsys):
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    src = make_series(tmp_path / "in", n=1, rle=())
    assert run_cli("--model", pt, "--out", tmp_path / "out", *src) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and "arbitrary code" in err and "safetensors" in err


def test_cuda_refused_when_unavailable(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    src = make_series(tmp_path / "in", n=1, rle=())
    assert run_cli("--model", weights, "--device", "cuda", "--out", tmp_path / "out", *src) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_help_documents_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert "2 when any input was skipped" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_bfloat16_instructions_warns(tmp_path, weights, capsys, monkeypatch, native):
    from mrsr import machine

    monkeypatch.setattr(machine, "cpu_info", lambda: {"bf16_native": native})
    src = make_series(tmp_path / "in", n=1, rle=())
    assert run_cli("--model", weights, "--bf16", "--out", tmp_path / "out", *src) == 0
    err = capsys.readouterr().err
    assert ("without bfloat16 instructions" in err) is not native
    assert list((tmp_path / "out").rglob("*.dcm"))  # a warning, not a refusal
