"""The embedded sample, ingest into the slice store, the split and the patches."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest

from mrsr.data.ingest import ingest
from mrsr.data.patches import extract_patches, hr_patch_size, make_patches
from mrsr.data.resize import downscale
from mrsr.data.split import make_split, split_counts
from mrsr.data.store import INDEX_COLUMNS, SeriesSlices, SliceStoreWriter, load_series, read_index


def test_sample_is_byte_identical_to_its_readme(root):
    sample = root / "data" / "btp-sample"
    readme = (sample / "README.md").read_text()
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.M)
    assert len(sums) == 12  # six patients, two studies each
    for digest, name in sums:
        assert hashlib.sha256((sample / name).read_bytes()).hexdigest() == digest, name
    shared = root.parent / "shared" / "data" / "btp-sample"
    if shared.is_dir():  # beside the checkout in this workplace: the copy must match it byte for byte
        for path in shared.rglob("*"):
            if path.is_file():
                assert (sample / path.relative_to(shared)).read_bytes() == path.read_bytes(), path
    assert (sample / "LICENSE-TCIA.html").exists()


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory, root):
    out = tmp_path_factory.mktemp("store")
    summary = ingest("sample", root / "data" / "btp-sample", out)
    return out, summary


def test_sample_ingest_index(sample_store):
    out, summary = sample_store
    index = read_index(out)
    assert list(index.columns) == INDEX_COLUMNS
    # 12 volumes of 24 slices, slices 20-23 all zero in each (sample README).
    assert summary == {"source": "sample", "series": 12, "slices": 240, "zero_slices_dropped": 48,
                       "nonfinite_slices_dropped": 0, "files_rejected": 0}
    assert index["slice_id"].is_unique
    assert set(index["patient_id"]) == {"PGBM-002", "PGBM-007", "PGBM-012", "PGBM-014", "PGBM-019", "PGBM-020"}
    assert (index[["rows", "cols"]] == 256).all().all()
    assert index["pixel_spacing_row"].isna().all()  # the sample's header spacing is known to be wrong
    for key, group in index.groupby("series_key"):
        volume = load_series(out, key)
        assert volume.shape == (20, 256, 256) and volume.dtype == np.float32
        assert np.all(np.diff(group.sort_values("slice_index")["position"]) > 0)
        row = group.iloc[3]
        assert volume[row.slice_index].max() == pytest.approx(row["max"])
        assert volume[row.slice_index].mean() == pytest.approx(row["mean"], rel=1e-5)
    # Integer-valued 16-bit intensities survive (no normalisation, no quantisation).
    vol = load_series(out, index["series_key"].iloc[0])
    assert np.all(vol == np.round(vol)) and vol.max() > 1000


def test_ingest_rejects_bad_nifti_without_stopping(tmp_path, root):
    src = tmp_path / "in"
    (src / "P1").mkdir(parents=True)
    (src / "P1" / "broken.nii.gz").write_bytes(b"not a nifti file")
    good = root / "data" / "btp-sample" / "PGBM-019" / "T1post_progression.nii.gz"
    (src / "P1" / "good.nii.gz").write_bytes(good.read_bytes())
    summary = ingest("local", src, tmp_path / "out")
    assert summary["series"] == 1 and summary["files_rejected"] == 1
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert rejected["path"].iloc[0].endswith("broken.nii.gz")
    assert "NIfTI" in rejected["reason"].iloc[0]


def test_split_counts_are_the_papers_or_proportional():
    assert split_counts(52, 24, 28) == (24, 28)
    assert split_counts(60, 24, 28) == (24, 28)  # the rest stays unused
    assert split_counts(4, 24, 28) == (2, 2)
    assert split_counts(13, 24, 28) == (6, 7)
    assert split_counts(2, 24, 28) == (1, 1)
    with pytest.raises(ValueError):
        split_counts(1, 24, 28)


def _index(n_patients: int, series_per_patient: int) -> pd.DataFrame:
    rows = []
    for p in range(n_patients):
        for s in range(series_per_patient):
            for i in range(3):
                rows.append({"slice_id": f"P{p}S{s}:{i}", "series_key": f"P{p}S{s}", "patient_id": f"P{p}",
                             "series_uid": f"1.2.{p}.{s}", "series_description": "T1", "max": 100.0 + p})
    return pd.DataFrame(rows)


def test_split_is_seeded_and_patient_split_never_shares_a_patient():
    index = _index(10, 2)
    a = make_split(index, "series", 7, 24, 28)
    b = make_split(index, "series", 7, 24, 28)
    assert a.equals(b)
    assert (a["split"] == "train").sum() == 9 and (a["split"] == "test").sum() == 11
    assert not make_split(index, "series", 8, 24, 28)["split"].equals(a["split"])
    by_patient = make_split(index, "patient", 7, 24, 28)
    assert by_patient.groupby("patient_id")["split"].nunique().max() == 1
    assert by_patient.loc[by_patient["series_key"] == "P3S1", "norm"].item() == 103.0


@pytest.mark.parametrize("scale,m,stride", [(2, 14, 11), (3, 10, 7), (4, 8, 6)])
def test_patches_pair_lr_with_the_right_hr_window(scale, m, stride):
    rng = np.random.default_rng(scale)
    hr = rng.random((2, 24 * scale, 30 * scale)).astype(np.float32)
    lr = downscale(hr, scale)
    lp, hp = extract_patches(hr, lr, scale, m, stride)
    p = hr_patch_size(m, scale)
    assert p == {2: 27, 3: 28, 4: 29}[scale]
    nr, nc = (24 - m) // stride + 1, (30 - m) // stride + 1
    assert lp.shape == (2 * nr * nc, m, m) and hp.shape == (2 * nr * nc, p, p)
    # Check a few pairs against explicit slicing.
    for k in [0, 1, nc, len(lp) - 1]:
        img, rest = divmod(k, nr * nc)
        r, c = divmod(rest, nc)
        assert np.array_equal(lp[k], lr[img, r * stride : r * stride + m, c * stride : c * stride + m])
        y, x = scale * r * stride, scale * c * stride
        assert np.array_equal(hp[k], hr[img, y : y + p, x : x + p])


def test_make_patches_on_the_sample(sample_store):
    out, _ = sample_store
    split = make_split(read_index(out), "series", 2021, 24, 28)
    arrays = make_patches(out, split, 2, 14, 11, val_slices=2, seed=0)
    assert arrays["lr"].shape[1:] == (1, 14, 14) and arrays["hr"].shape[1:] == (1, 27, 27)
    # 12 series split 24:28 -> 6 training series x 20 slices, 2 held out; 128x128 LR -> 11 x 11 patches per slice.
    assert len(arrays["lr"]) == 118 * 121
    assert arrays["hr"].max() <= 1.0 and arrays["hr"].min() >= 0.0
    assert arrays["val_lr_0"].shape == (128, 128) and arrays["val_hr_1"].shape == (256, 256)


def _on_disk_dtype(store, key: str) -> np.dtype:
    return np.load(store / "slices" / f"{key}.npy", mmap_mode="r").dtype


def test_store_keeps_small_integers_and_always_reads_back_float32(tmp_path):
    rng = np.random.default_rng(0)
    ints = rng.integers(-3000, 3000, (4, 8, 9)).astype(np.int16)
    ints[1] = 0  # all-zero (padding): dropped, as for float series
    wide = rng.integers(0, 70000, (2, 8, 9)).astype(np.int32)  # not a kept dtype: float32, as before
    floats = rng.normal(100, 20, (2, 8, 9))
    writer = SliceStoreWriter(tmp_path)
    keys = [writer.add_series(SeriesSlices("P1", f"1.2.{i}", name, pixels, [f"f{i}"] * len(pixels), list(range(len(pixels)))))
            for i, (name, pixels) in enumerate([("ints", ints), ("wide", wide), ("floats", floats)])]
    summary = writer.close("local")
    assert summary["zero_slices_dropped"] == 1 and summary["slices"] == 7
    index = read_index(tmp_path)
    expected = {keys[0]: ints[[0, 2, 3]].astype(np.float32), keys[1]: wide.astype(np.float32),
                keys[2]: floats.astype(np.float32)}
    assert [_on_disk_dtype(tmp_path, k) for k in keys] == [np.int16, np.float32, np.float32]
    for key, values in expected.items():
        for mmap in (True, False):
            got = load_series(tmp_path, key, mmap=mmap)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, values)
        rows = index[index.series_key == key].sort_values("slice_index")
        exact = values.reshape(len(values), -1).astype(np.float64)
        np.testing.assert_array_equal(rows["min"], exact.min(1))
        np.testing.assert_array_equal(rows["max"], exact.max(1))
        tol = 1e-12 if key == keys[0] else 1e-5  # integer statistics are exact; float32 ones as before
        np.testing.assert_allclose(rows["mean"], exact.mean(1), rtol=tol)
        np.testing.assert_allclose(rows["std"], exact.std(1), rtol=tol)


def test_nifti_integers_are_stored_as_integers_and_scaled_volumes_as_float(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(1)
    volume = rng.integers(1, 4000, (16, 12, 3)).astype(np.int16)
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "in" / "plain.nii.gz")
    scaled = nib.Nifti1Image(volume, np.eye(4))
    scaled.header.set_slope_inter(0.37, -2.0)
    nib.save(scaled, tmp_path / "in" / "scaled.nii.gz")
    ingest("local", tmp_path / "in", tmp_path / "store")
    index = read_index(tmp_path / "store")
    for name, dtype in (("plain", np.int16), ("scaled", np.float32)):
        key = index.loc[index.series_description == name, "series_key"].iloc[0]
        assert _on_disk_dtype(tmp_path / "store", key) == dtype
        image = nib.load(tmp_path / "in" / f"{name}.nii.gz")
        reference = np.transpose(np.asarray(image.dataobj, dtype=np.float32), (2, 1, 0))  # the float path
        np.testing.assert_array_equal(load_series(tmp_path / "store", key), reference)


def test_integer_and_float_stores_give_bit_identical_patches(tmp_path, sample_store):
    """The sample's intensities are integers: stored as uint16 they must give exactly the float32
    store's split and patches (what training reads), so the store's dtype never changes results."""
    out, _ = sample_store
    index = read_index(out)
    writer = SliceStoreWriter(tmp_path)
    for key, group in index.groupby("series_key"):
        volume = np.asarray(load_series(out, key))
        assert np.all(volume == np.round(volume)) and volume.min() >= 0 and volume.max() < 2**16
        row = group.sort_values("slice_index").iloc[0]
        writer.add_series(SeriesSlices(row.patient_id, row.series_uid, row.series_description, volume.astype(np.uint16),
                                       list(group.path), list(group.position)))
    writer.close("sample")
    ints = read_index(tmp_path)
    assert {_on_disk_dtype(tmp_path, k) for k in ints.series_key} == {np.dtype(np.uint16)}
    split = make_split(index, "series", 2021, 24, 28)
    assert make_split(ints, "series", 2021, 24, 28).equals(split)
    want = make_patches(out, split, 2, 14, 11, val_slices=2, seed=0)
    got = make_patches(tmp_path, split, 2, 14, 11, val_slices=2, seed=0)
    assert want.keys() == got.keys()
    for k in want:
        assert want[k].dtype == got[k].dtype and want[k].tobytes() == got[k].tobytes(), k
