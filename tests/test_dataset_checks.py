"""A dataset that cannot be split as configured is refused before work starts, in one line naming the
key and the count; pinned test series and patients are what is tested."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from mrsr.config import ConfigError, validate_config
from mrsr.data.split import make_split


def check_config(profile: dict, path, cwd) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(profile))
    return subprocess.run([sys.executable, "-m", "mrsr.cli", "check-config", str(path)], cwd=cwd,
                          capture_output=True, text=True)


def one_line_refusal(result: subprocess.CompletedProcess) -> str:
    text = (result.stdout + result.stderr).strip()
    assert result.returncode == 2 and "\n" not in text and "Traceback" not in text, text
    return text


def local_copy(root, tmp_path, volumes: list[str]):
    """A local data folder holding ``volumes`` of the sample (PATIENT/NAME.nii.gz)."""
    folder = tmp_path / "mydata"
    for name in volumes:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / "data" / "btp-sample" / name, folder / name)
    (folder / "README.md").write_text("my scans\n")
    return folder


def test_check_config_refuses_a_one_series_local_dataset_in_one_line(root, tmp_path, default_config):
    folder = local_copy(root, tmp_path, ["PGBM-002/T1post_progression.nii.gz"])
    profile = {**default_config, "profile": "mine", "data": {"source": "local", "local_dir": str(folder)}}
    text = one_line_refusal(check_config(profile, tmp_path / "mine.yaml", tmp_path))
    assert "'data.local_dir'" in text and "holds 1 series" in text and "at least 2" in text


def test_check_config_counts_patients_for_the_leakage_check_and_split_by_patient(root, tmp_path, default_config):
    folder = local_copy(root, tmp_path, ["PGBM-002/T1post_progression.nii.gz", "PGBM-002/T1post_pre-progression.nii.gz"])
    profile = {**default_config, "profile": "mine", "data": {"source": "local", "local_dir": str(folder)}}
    text = one_line_refusal(check_config(profile, tmp_path / "mine.yaml", tmp_path))
    assert "'leakage'" in text and "holds 1 patient;" in text and "leakage: null" in text
    profile["split"] = {**profile["split"], "by": "patient"}
    profile["leakage"] = None
    text = one_line_refusal(check_config(profile, tmp_path / "mine.yaml", tmp_path))
    assert "'split.by'" in text and "holds 1 patient;" in text
    profile["split"]["by"] = "series"  # two series of one patient split by series: fine
    ok = check_config(profile, tmp_path / "mine.yaml", tmp_path)
    assert ok.returncode == 0 and "2 series of 1 patients" in ok.stdout, ok.stdout + ok.stderr


def test_check_config_refuses_a_pinned_name_not_in_the_data(root, tmp_path, default_config):
    profile = {**default_config, "split": {**default_config["split"], "test_series": ["PGBM-002/T1post_progression",
                                                                                       "PGBM-999/T1post"]}}
    text = one_line_refusal(check_config(profile, tmp_path / "mine.yaml", root))
    assert "'split.test_series'" in text and "'PGBM-999/T1post' is not in the data" in text
    profile["split"] = {**default_config["split"], "test_patients": ["PGBM-002", "PGBM-007", "PGBM-012", "PGBM-014",
                                                                     "PGBM-019", "PGBM-020"]}
    text = one_line_refusal(check_config(profile, tmp_path / "mine.yaml", root))
    assert "'split.test_patients'" in text and "none is left to train on" in text


def test_a_tcia_patient_list_too_short_for_a_split_by_patient_is_refused_offline(default_config):
    config = {**default_config, "data": {"source": "tcia", "tcia": {"patients": ["PGBM-001"]}}}
    with pytest.raises(ConfigError, match=r"'leakage': data.tcia.patients lists 1 patient"):
        validate_config(yaml.safe_load(yaml.safe_dump(config)))
    config["split"] = {**default_config["split"], "test_patients": ["PGBM-002"]}
    config["leakage"] = None
    with pytest.raises(ConfigError, match=r"'split.test_patients': 'PGBM-002' is not in data.tcia.patients"):
        validate_config(yaml.safe_load(yaml.safe_dump(config)))


def sample_index() -> pd.DataFrame:
    """A store index of 6 patients x 2 series, 3 slices each."""
    rows = []
    for p in range(6):
        for s in ("pre", "post"):
            for k in range(3):
                rows.append({"series_key": f"P{p}_{s}_key", "patient_id": f"P{p}", "series_uid": f"P{p}/{s}",
                             "series_description": s, "slice_id": len(rows), "max": 100.0})
    return pd.DataFrame(rows)


def test_pinned_test_series_and_patients_are_what_is_tested():
    index = sample_index()
    plain = make_split(index, "series", 2021, 24, 28)
    assert make_split(index, "series", 2021, 24, 28, (), ()).equals(plain)  # no pins: the seeded draw as before
    pins = ["P3/post", "P5_pre_key"]  # a SeriesInstanceUID and a series key
    split = make_split(index, "series", 2021, 24, 28, test_series=pins)
    assert set(split.loc[split["split"] == "test", "series_uid"]) == {"P3/post", "P5/pre"}
    assert set(split.loc[split["split"] == "train", "series_uid"]) == set(index["series_uid"]) - {"P3/post", "P5/pre"}
    # a draw of 4 of the 10 others for training, seeded; the remaining 6 are unused
    few = make_split(index, "series", 2021, 4, 28, test_series=pins)
    assert (few["split"] == "train").sum() == 4 and (few["split"] == "unused").sum() == 6
    assert make_split(index, "series", 2021, 4, 28, test_series=pins).equals(few)
    # by patient, a pinned series takes its whole patient to the test side; pinned patients likewise
    by_patient = make_split(index, "patient", 2021, 24, 28, test_series=["P3/post"], test_patients=["P0"])
    assert set(by_patient.loc[by_patient["split"] == "test", "patient_id"]) == {"P0", "P3"}
    assert (by_patient.loc[by_patient["split"] == "test"].groupby("patient_id").size() == 2).all()
    with pytest.raises(ConfigError, match=r"'split.test_patients': 'P9' is not in the data"):
        make_split(index, "series", 2021, 24, 28, test_patients=["P9"])


def test_mrsr_split_honours_pins_from_the_profile(root, tmp_path, default_config):
    from mrsr.data.ingest import ingest

    store = tmp_path / "store"
    ingest("sample", root / "data" / "btp-sample", store)
    profile = {**default_config, "split": {**default_config["split"], "test_series": ["PGBM-002/T1post_progression"],
                                           "test_patients": ["PGBM-020"]}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    out = tmp_path / "split.csv"
    result = subprocess.run([sys.executable, "-m", "mrsr.cli", "split", "--store", str(store), "--config",
                             str(tmp_path / "p.yaml"), "--out", str(out)], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    split = pd.read_csv(out, dtype=str)
    assert set(split.loc[split["split"] == "test", "series_uid"]) == {
        "PGBM-002/T1post_progression", "PGBM-020/T1post_progression", "PGBM-020/T1post_pre-progression"}
    profile["split"]["test_series"] = ["PGBM-002/T1post"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(profile))
    result = subprocess.run([sys.executable, "-m", "mrsr.cli", "split", "--store", str(store), "--config",
                             str(tmp_path / "p.yaml"), "--out", str(out)], cwd=root, capture_output=True, text=True)
    assert "'split.test_series': 'PGBM-002/T1post' is not in the data" in one_line_refusal(result)


@pytest.mark.slow
def test_the_workflows_first_job_refuses_a_one_series_dataset(root, tmp_path, tiny_config):
    """No check-config first: the ingest job says why in one line on Snakemake's output, and no split job runs."""
    from workflow_fixtures import SNAKEMAKE, copy_workflow, run

    folder = local_copy(root, tmp_path, ["PGBM-002/T1post_progression.nii.gz"])
    tiny_config["data"] = {"source": "local", "local_dir": str(folder)}
    work = tmp_path / "repo"
    copy_workflow(root, work, tiny_config)
    result = run([*SNAKEMAKE, "--cores", "1", "prepare"], work)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "error: config key 'data.local_dir': data.local_dir" in text and "holds 1 series" in text, text
    assert "rule split:" not in text and "Traceback" not in text
    assert not (work / "data/prepared/test/store/index.csv").exists()
