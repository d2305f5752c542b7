"""DICOM ingest: every transfer syntax, value transforms, ordering, multi-frame and each rejection.

Files are real DICOM written by :mod:`dicom_fixtures`; assertions are on the stored float values,
positions and rejection reasons, not just on "no exception".
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_fixtures import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    enhanced_mr_dataset,
    mr_dataset,
    new_uid,
    ramp,
    reject_cases,
    save,
)
from mrsr.data.dicom import DicomSeries, ingest_dicom_files, iter_dicom_series, scan_dicom_file
from mrsr.data.dicom_pixels import decode_dicom_file, to_scanner_units
from mrsr.data.store import SliceStoreWriter, load_series, read_index

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def ingest(tmp_path: Path, files: list[Path], workers: int = 1):
    writer = SliceStoreWriter(tmp_path / "store")
    ingest_dicom_files(files, writer, workers=workers)
    summary = writer.close("local")
    return summary, read_index(tmp_path / "store"), writer.rejected


def read_series(files: list[Path]) -> tuple[list[DicomSeries], list[tuple[str, str]]]:
    """Every series among ``files`` as the reader decodes them (one process), and the rejected files."""
    rejected: list[tuple[str, str]] = []
    return list(iter_dicom_series(files, lambda p, r: rejected.append((p, r)), workers=1)), rejected


def stored(tmp_path: Path, index, uid: str) -> np.ndarray:
    key = index.loc[index.series_uid == uid, "series_key"].iloc[0]
    return np.asarray(load_series(tmp_path / "store", key))


SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
    RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, JPEGBaseline8Bit,
]


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name.split(" (")[0].replace(" ", "-"))
def test_each_transfer_syntax_decodes_to_the_written_values(tmp_path, syntax):
    uid = new_uid()
    eight_bit = syntax == JPEGBaseline8Bit
    images = [(ramp(i) // 4).astype(np.uint8) if eight_bit else ramp(i) for i in range(3)]
    files = []
    for i, img in enumerate(images):
        ds = mr_dataset(img, series_uid=uid, position=(0, 0, 5.0 * i), instance=i + 1)
        files.append(save(ds, tmp_path / "in" / f"{i}.dcm", syntax))
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax  # really written in that syntax
    summary, index, rejected = ingest(tmp_path, files)
    assert rejected == [] and summary["slices"] == 3
    got = stored(tmp_path, index, uid)
    for i in range(3):
        err = np.abs(got[i] - images[i].astype(np.float32))
        if eight_bit:  # JPEG baseline is lossy (quality 95): small errors at the ramp's sharp steps only
            assert err.max() <= 8 and err.mean() < 1.0
        else:
            assert err.max() == 0
    assert list(index.position) == [0.0, 5.0, 10.0]
    assert index.pixel_spacing_row.iloc[0] == pytest.approx(0.9) and index.pixel_spacing_col.iloc[0] == pytest.approx(0.8)


def test_rescale_slope_intercept_and_signed_pixels(tmp_path):
    uid_u, uid_s = new_uid(), new_uid()
    img_u = ramp(0)
    img_s = (ramp(1).astype(np.int32) - 250).astype(np.int16)  # negative and positive values
    assert img_s.min() < 0 < img_s.max()
    f1 = save(mr_dataset(img_u, series_uid=uid_u, slope=2.5, intercept=-100.0), tmp_path / "u.dcm")
    f2 = save(mr_dataset(img_s, series_uid=uid_s, slope=0.5, intercept=10.0), tmp_path / "s.dcm", RLELossless)
    uid_j = new_uid()  # signed through a compressed codec too (JPEG-LS stores signed data specially)
    f3 = save(mr_dataset(img_s, series_uid=uid_j, intercept=-1.0), tmp_path / "j.dcm", JPEGLSLossless)
    _, index, rejected = ingest(tmp_path, [f1, f2, f3])
    assert rejected == []
    np.testing.assert_allclose(stored(tmp_path, index, uid_u)[0], img_u * 2.5 - 100.0)
    np.testing.assert_allclose(stored(tmp_path, index, uid_s)[0], img_s.astype(np.float64) * 0.5 + 10.0)
    np.testing.assert_array_equal(stored(tmp_path, index, uid_j)[0], img_s.astype(np.float32) - 1.0)


def test_monochrome1_is_inverted_within_the_stored_range(tmp_path):
    uid = new_uid()
    img = ramp(0)  # values < 4096
    f = save(mr_dataset(img, series_uid=uid, photometric="MONOCHROME1", bits_stored=12, slope=2.0), tmp_path / "m1.dcm")
    _, index, _ = ingest(tmp_path, [f])
    np.testing.assert_allclose(stored(tmp_path, index, uid)[0], (4095 - img.astype(np.float64)) * 2.0)


def test_multiframe_is_split_and_ordered_with_per_frame_rescale(tmp_path):
    uid = new_uid()
    frames = np.stack([ramp(i) for i in range(4)])
    zs = [30.0, 10.0, 40.0, 20.0]  # frames stored out of order
    slopes = [1.0, 2.0, 3.0, 4.0]
    ds = enhanced_mr_dataset(frames, series_uid=uid, positions=[(0, 0, z) for z in zs], slopes=slopes, intercept=-5.0)
    f = save(ds, tmp_path / "multi.dcm", JPEG2000Lossless)
    summary, index, rejected = ingest(tmp_path, [f])
    assert rejected == [] and summary["slices"] == 4
    got = stored(tmp_path, index, uid)
    assert list(index.position) == [10.0, 20.0, 30.0, 40.0]
    for out_i, frame_i in enumerate(np.argsort(zs)):
        np.testing.assert_allclose(got[out_i], frames[frame_i] * slopes[frame_i] - 5.0)
    assert index.pixel_spacing_row.iloc[0] == 0.5
    assert set(index.path) == {str(f)}


def test_per_frame_rescale_overrides_a_stale_top_level_one(tmp_path):
    """Enhanced MR keeps Rescale Slope/Intercept in the functional groups; a converter's leftover
    top-level copy (the first source image's) must not scale every frame."""
    uid = new_uid()
    frames = np.stack([ramp(i) for i in range(3)])
    ds = enhanced_mr_dataset(frames, series_uid=uid, positions=[(0, 0, float(z)) for z in range(3)],
                             slopes=[1.0, 2.0, 3.0], intercept=-5.0)
    ds.RescaleSlope, ds.RescaleIntercept = 7.0, 100.0  # stale: contradicts every frame's own values
    f = save(ds, tmp_path / "multi.dcm")
    _, index, rejected = ingest(tmp_path, [f])
    assert rejected == []
    got = stored(tmp_path, index, uid)
    for k, slope in enumerate([1.0, 2.0, 3.0]):
        np.testing.assert_array_equal(got[k], frames[k] * slope - 5.0)


def test_shuffled_randomly_named_files_are_grouped_and_ordered_along_the_normal(tmp_path):
    # An oblique stack: the normal is not z, so sorting by z or by file name would be wrong.
    c, s = np.cos(0.5), np.sin(0.5)
    iop = (1.0, 0.0, 0.0, 0.0, c, s)
    normal = np.cross(iop[:3], iop[3:])
    uids = [new_uid(), new_uid()]
    files, expected = [], {}
    rng = random.Random(7)
    for k, uid in enumerate(uids):
        steps = list(range(8))
        rng.shuffle(steps)  # instance numbers deliberately unrelated to position
        for inst, step in enumerate(steps):
            pos = tuple(np.array([3.0, -2.0, 1.0]) + (step * 2.5 - 7) * normal)
            ds = mr_dataset(ramp(step + 10 * k), series_uid=uid, position=pos, orientation=iop, instance=inst + 1,
                            patient_id=f"P{k}")
            files.append(save(ds, tmp_path / "in" / uuid.uuid4().hex[:6] / uuid.uuid4().hex, ExplicitVRLittleEndian))
        expected[uid] = [ramp(step + 10 * k) for step in range(8)]
    rng.shuffle(files)
    summary, index, rejected = ingest(tmp_path, files)
    assert rejected == [] and summary["series"] == 2
    for uid in uids:
        got = stored(tmp_path, index, uid)
        for i in range(8):
            np.testing.assert_array_equal(got[i], expected[uid][i])
        pos = index.loc[index.series_uid == uid, "position"].to_numpy()
        assert np.all(np.diff(pos) == pytest.approx(2.5))


def test_instance_number_orders_slices_without_position(tmp_path):
    uid = new_uid()
    files = []
    for inst in [3, 1, 2]:
        ds = mr_dataset(ramp(inst), series_uid=uid, instance=inst)
        del ds.ImagePositionPatient
        files.append(save(ds, tmp_path / f"x{inst}", ExplicitVRLittleEndian))
    _, index, _ = ingest(tmp_path, files)
    got = stored(tmp_path, index, uid)
    for i, inst in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(got[i], ramp(inst))
    assert index.position.isna().all()


def test_pool_and_serial_give_identical_stores(tmp_path):
    uid_a, uid_b = new_uid(), new_uid()
    # some RLE files: their chunks go to the process pool, native-only chunks to the threads
    files = [save(mr_dataset(ramp(i), series_uid=uid_a if i % 2 else uid_b, position=(0, 0, float(i)), instance=i),
                  tmp_path / "in" / f"{i:03d}.dcm", RLELossless if i % 7 == 0 else ExplicitVRLittleEndian)
             for i in range(60)]
    files.append(tmp_path / "in" / "junk.txt")
    files[-1].write_text("not dicom")
    _, serial, rej1 = ingest(tmp_path / "a", files, workers=1)
    _, pooled, rej2 = ingest(tmp_path / "b", files, workers=2)
    assert rej1 == rej2 and len(rej1) == 1
    assert serial.equals(pooled) and len(serial) == 60
    for uid in (uid_a, uid_b):
        np.testing.assert_array_equal(stored(tmp_path / "a", serial, uid), stored(tmp_path / "b", pooled, uid))


def test_each_rejection_has_a_clear_reason_and_good_files_survive(tmp_path):
    good_uid = new_uid()
    good = [save(mr_dataset(ramp(i), series_uid=good_uid, position=(0, 0, float(i)), instance=i), tmp_path / f"g{i}.dcm")
            for i in range(3)]
    dup = tmp_path / "dup.dcm"
    dup.write_bytes(good[0].read_bytes())
    cases = reject_cases(tmp_path, good_uid)
    files = good + [dup] + [p for p, _ in cases.values()]
    random.Random(1).shuffle(files)
    summary, index, rejected = ingest(tmp_path, files)
    reasons = {r["path"]: r["reason"] for r in rejected}
    for name, (path, expected) in cases.items():
        assert expected in reasons.get(str(path), ""), (name, reasons.get(str(path)))
    dup_reason = reasons.get(str(dup)) or reasons.get(str(good[0]))
    assert dup_reason and "duplicate SOPInstanceUID" in dup_reason
    assert summary["files_rejected"] == len(cases) + 1
    assert summary["series"] == 1 and summary["slices"] == 3
    got = stored(tmp_path, index, good_uid)
    for i in range(3):
        np.testing.assert_array_equal(got[i], ramp(i))


def test_series_come_ordered_along_the_normal_with_their_geometry(tmp_path):
    uid = new_uid()
    files = [save(mr_dataset(ramp(i), series_uid=uid, position=(0, 0, -float(i)), instance=i), tmp_path / f"{i}.dcm")
             for i in range(3)]
    series, rejected = read_series(files)
    assert rejected == [] and len(series) == 1
    s = series[0]
    assert [sl.position for sl in s.slices] == [-2.0, -1.0, 0.0]
    assert [sl.instance for sl in s.slices] == [2, 1, 0]
    assert [sl.path for sl in s.slices] == [str(files[i]) for i in (2, 1, 0)]
    np.testing.assert_array_equal(s.pixels[0], ramp(2))
    assert s.normal == (0.0, 0.0, 1.0) and s.pixel_spacing == (0.9, 0.8)
    header = scan_dicom_file(files[0])
    assert header.rows == 48 and header.n_frames == 1


def test_local_ingest_command_reads_a_dicom_folder(tmp_path):
    """The ``mrsr ingest --source local`` path (the lead's module) hands DICOM files to this reader."""
    from mrsr.data.ingest import ingest as run_ingest

    uid = new_uid()
    for i in range(3):
        save(mr_dataset(ramp(i), series_uid=uid, position=(0, 0, float(i))), tmp_path / "in" / "PGBM-001" / uid / f"{i}.dcm")
    (tmp_path / "in" / "LICENSE.txt").write_text("CC BY 3.0")
    summary = run_ingest("local", tmp_path / "in", tmp_path / "store")
    assert summary["slices"] == 3 and summary["files_rejected"] == 0


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian],
                         ids=["explicit", "implicit", "big-endian"])
def test_fast_native_path_matches_pydicom_on_tricky_values(tmp_path, syntax):
    """The direct read at the pixel offset must give pydicom's values: 12 of 16 bits with junk in
    the unused high bits (masked when unsigned, sign-extended when signed), MONOCHROME1, rescale, frames."""
    rng = np.random.default_rng(3)
    junk = (rng.integers(0, 16, (48, 48)) << 12).astype(np.uint16)
    cases = {
        "u12": mr_dataset((ramp(0) | junk), series_uid=new_uid(), bits_stored=12, slope=1.5, intercept=-3.0),
        "s12": mr_dataset((((ramp(1).astype(np.int32) - 300) & 0x0FFF) | junk).astype(np.uint16).view(np.int16),
                          series_uid=new_uid(), bits_stored=12),
        "mono1": mr_dataset(ramp(2), series_uid=new_uid(), photometric="MONOCHROME1", bits_stored=12),
    }
    multi = enhanced_mr_dataset(np.stack([ramp(i) for i in range(3)]), series_uid=new_uid(),
                                positions=[(0, 0, float(z)) for z in (2, 0, 1)], slopes=[1.0, 2.0, 0.5])
    cases["multi"] = multi
    for name, ds in cases.items():
        path = save(ds, tmp_path / f"{name}.dcm", syntax)
        header = scan_dicom_file(path)
        assert header.pixel.offset is not None, name  # the fast path is taken
        reference = decode_dicom_file(path)  # through pydicom's pixel_array
        stored = pydicom.dcmread(path).pixel_array.reshape(reference.shape)
        np.testing.assert_array_equal(reference, to_scanner_units(stored, header.pixel))
        series, rejected = read_series([path])
        assert rejected == []
        order = np.argsort([s.frame for s in series[0].slices])
        np.testing.assert_array_equal(series[0].pixels[order], reference, err_msg=name)
    s12 = decode_dicom_file(tmp_path / "s12.dcm")[0]
    np.testing.assert_array_equal(s12, ramp(1).astype(np.float32) - 300)  # sign-extended from 12 bits
    np.testing.assert_array_equal(decode_dicom_file(tmp_path / "u12.dcm")[0], ramp(0) * 1.5 - 3.0)


def _store_dtype(store: Path, index, uid: str) -> np.dtype:
    key = index.loc[index.series_uid == uid, "series_key"].iloc[0]
    return np.load(store / "slices" / f"{key}.npy", mmap_mode="r").dtype


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless],
                         ids=["explicit", "big-endian", "rle"])
def test_store_keeps_exact_integers_and_reads_back_the_same_floats(tmp_path, syntax):
    """The store keeps integer-valued series as integers (half the bytes); what load_series returns must
    equal, bit for bit, the float32 scanner values of pydicom's decoding, for integer and float rescale."""
    rng = np.random.default_rng(5)
    junk = (rng.integers(0, 16, (48, 48)) << 12).astype(np.uint16)
    signed12 = (((ramp(1).astype(np.int32) - 300) & 0x0FFF) | junk).astype(np.uint16).view(np.int16)
    cases: dict[str, tuple[Dataset, np.dtype]] = {  # name -> (dataset, dtype the store should keep)
        "u12": (mr_dataset(ramp(0) | junk, series_uid=new_uid(), bits_stored=12), np.uint16),
        "s12, slope 2, intercept -7": (mr_dataset(signed12, series_uid=new_uid(), bits_stored=12, slope=2, intercept=-7),
                                       np.int16),
        "mono1": (mr_dataset(ramp(2), series_uid=new_uid(), photometric="MONOCHROME1", bits_stored=12), np.uint16),
        "u8": (mr_dataset((ramp(3) // 8).astype(np.uint8), series_uid=new_uid()), np.uint8),
        "float slope": (mr_dataset(ramp(5), series_uid=new_uid(), slope=0.37, intercept=1.5), np.float32),
        "beyond int16": (mr_dataset(ramp(6) | 0x8000, series_uid=new_uid(), intercept=-1024), np.float32),
    }
    multi = enhanced_mr_dataset(np.stack([ramp(i) for i in range(3)]), series_uid=new_uid(),
                                positions=[(0, 0, float(z)) for z in (2, 0, 1)], slopes=[1.0, 3.0, 2.0], intercept=-5.0)
    multi.BitsStored, multi.HighBit = 12, 11
    cases["multi-frame, per-frame slopes"] = (multi, np.int16)
    if syntax != RLELossless:  # pydicom's RLE encoder cannot write 8 stored bits in 16 allocated
        cases["8 of 16 bits"] = (mr_dataset(ramp(4) & 0xFF | junk, series_uid=new_uid(), bits_stored=8), np.uint8)
    paths = {name: save(ds, tmp_path / "in" / f"{i}.dcm", syntax) for i, (name, (ds, _)) in enumerate(cases.items())}
    _, index, rejected = ingest(tmp_path, list(paths.values()))
    assert rejected == []
    for name, (ds, dtype) in cases.items():
        reference = decode_dicom_file(paths[name])  # float32, through pydicom's pixel_array
        rows = index[index.series_uid == ds.SeriesInstanceUID]
        frames = [int(np.argsort([2, 0, 1])[k]) for k in range(3)] if reference.shape[0] == 3 else [0]
        got = stored(tmp_path, index, ds.SeriesInstanceUID)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, reference[frames], err_msg=name)
        assert _store_dtype(tmp_path / "store", index, ds.SeriesInstanceUID) == dtype, name
        exact = reference[frames].astype(np.float64).reshape(len(frames), -1)
        np.testing.assert_array_equal(rows["min"], exact.min(1))
        np.testing.assert_array_equal(rows["max"], exact.max(1))
        np.testing.assert_allclose(rows["mean"], exact.mean(1), rtol=1e-6 if dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(rows["std"], exact.std(1), rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_a_decoder_exceeding_bits_stored_turns_the_series_to_float32(tmp_path):
    """BitsStored says 8, but a JPEG-LS frame decodes to values above 255: the integer array planned from
    the header cannot hold them, so the series is stored as float32 with every value intact."""
    uid = new_uid()
    native = save(mr_dataset(ramp(0) & 0xFF, series_uid=uid, bits_stored=8, position=(0, 0, 0.0)), tmp_path / "a.dcm")
    jls = save(mr_dataset(ramp(9), series_uid=uid, position=(0, 0, 1.0)), tmp_path / "b.dcm", JPEGLSLossless)
    ds = pydicom.dcmread(jls)
    ds.BitsStored, ds.HighBit = 8, 7
    ds.save_as(jls)
    reference = [decode_dicom_file(p)[0] for p in (native, jls)]
    assert reference[1].max() > 255
    _, index, rejected = ingest(tmp_path, [native, jls])
    assert rejected == []
    np.testing.assert_array_equal(stored(tmp_path, index, uid), np.stack(reference))
    assert _store_dtype(tmp_path / "store", index, uid) == np.float32


def test_integer_dtypes_agree_between_reader_and_store():
    from mrsr.data import dicom_pixels, store

    assert dicom_pixels.INTEGER_DTYPES == store.INTEGER_DTYPES
