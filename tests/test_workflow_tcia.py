"""The workflow's data stage with ``data.source: tcia``, downloading from the loopback NBIA v4 server.

Why a separate file: tests/test_tcia_download.py checks the downloader alone; this runs the Snakemake
rules (download_tcia -> ingest -> split -> patches) the way a user does, so the rule's command line,
its config keys and the hand-over from the download folder to the ingest step are tested too.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from nbia_server import NbiaServer, series_from_manifest
from workflow_fixtures import SNAKEMAKE, copy_workflow, run


@pytest.mark.slow
def test_tcia_source_downloads_verifies_ingests_and_a_rerun_skips_verified_series(root, tmp_path, tiny_config,
                                                                                   monkeypatch):
    monkeypatch.setenv("MRSR_NO_DVC_COMMIT", "1")  # dvc.lock is another test's subject
    catalogue = series_from_manifest(tmp_path / "catalogue", n_patients=2, images=3, size=64)
    wanted = [s for s in catalogue if s.description == "T1post"]  # config filter; MaskTumor never fetched
    assert len(wanted) == 4
    server = NbiaServer(series=catalogue).start()
    try:
        tiny_config["data"]["source"] = "tcia"
        tiny_config["data"]["tcia"].update(api_url=server.base_url, series_descriptions=["T1post"], workers=2)
        work = tmp_path / "repo"
        copy_workflow(root, work, tiny_config)
        result = run([*SNAKEMAKE, "--cores", "2", "prepare"], work, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]

        raw = work / "data" / "raw" / "tcia"
        manifest = json.loads((raw / "manifest.json").read_text())
        # the rule's output: a copy of the manifest, so that Snakemake never deletes the manifest itself
        assert json.loads((raw / "downloaded.json").read_text()) == manifest
        assert {uid: e["status"] for uid, e in manifest["series"].items()} == {s.uid: "verified" for s in wanted}
        for s in wanted:
            assert manifest["series"][s.uid]["md5_source"] == "server"
            for name, data in s.files.items():
                assert (raw / s.patient_id / s.uid / name).read_bytes() == data
        assert all(server.image_requests(s.uid) == [] for s in catalogue if s not in wanted)
        assert server.bad_params == []
        assert "CC BY 3.0" in (raw / "LICENSE.txt").read_text()
        assert "10.7937/K9/TCIA.2018.15quzvnb" in (raw / "CITATION.md").read_text()

        store = work / "data" / "prepared" / "test" / "store"
        index = pd.read_csv(store / "index.csv", dtype={"series_uid": str, "patient_id": str})
        assert sorted(index.series_uid.unique()) == sorted(s.uid for s in wanted) and len(index) == 3 * len(wanted)
        assert set(index.patient_id) == {s.patient_id for s in wanted}
        assert pd.read_csv(store / "rejected.csv").empty  # licence, citation and manifest are not taken for images
        split = pd.read_csv(work / "data" / "prepared" / "test" / "split.csv")
        assert sorted(split.series_key) == sorted(index.series_key.unique())
        assert (work / "data" / "prepared" / "test" / "patches" / "x2.npz").stat().st_size > 0

        # Forcing the download step again (as a config change would) fetches no image: every series
        # is verified already, and Snakemake deleted only the rule's output, not manifest.json.
        before = len(server.requests)
        again = run([*SNAKEMAKE, "--cores", "2", "--forcerun", "download_tcia", "--", "data/raw/tcia/downloaded.json"],
                    work, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert [ep for _, ep, _ in server.requests[before:]] == ["getSeries"]
        assert "0 series downloaded, 4 already verified" in (work / "logs" / "download_tcia.log").read_text()
        assert json.loads((raw / "downloaded.json").read_text()) == manifest
    finally:
        server.stop()
