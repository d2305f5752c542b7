"""``mrsr download --source tcia`` against a real loopback NBIA v4 server (tests/nbia_server.py).

Each test names one failure mode of the real service (docs/tcia-api.md §4-5) and asserts on what
ends up on disk: verified files with the server's MD5s, the manifest, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from mrsr.cli import main as cli_main
from mrsr.data.tcia import download_collection
from mrsr.data.tcia.client import NbiaClient, RetryPolicy, parse_retry_after
from mrsr.data.tcia.errors import CollectionNotAccessible
from mrsr.data.tcia.zipcheck import check_entry_name
from nbia_server import NbiaServer, series_from_manifest

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
CLI_FAST = ["--no-progress", "--backoff", "0.01", "--pause", "0", "--timeout", "2"]
NOTES = {"manifest.json", "series.csv", "LICENSE.txt", "CITATION.md"}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> list:
    """Series of two real Brain-Tumor-Progression patients (UIDs, descriptions, SOP classes from the
    sample's TCIA manifest), 3 small DICOM files each; MaskTumor series are Secondary Capture."""
    return series_from_manifest(tmp_path_factory.mktemp("catalogue"), n_patients=2)


@pytest.fixture
def server(catalogue):
    srv = NbiaServer(series=list(catalogue), limited={"Limited-Collection"}).start()
    yield srv
    srv.stop()


def images(catalogue):
    return [s for s in catalogue if s.description != "MaskTumor"]


def download(server, out: Path, **kwargs):
    opts = dict(api_url=server.base_url, retry=FAST, timeout=(2.0, 0.5), pause=0.0, progress=False)
    opts.update(kwargs)
    return download_collection("Brain-Tumor-Progression", out, **opts)


def disk_files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def expected_files(series) -> set[str]:
    return NOTES | {f"{s.patient_id}/{s.uid}/{name}" for s in series for name in s.files}


def assert_verified(out: Path, series) -> None:
    """Every series on disk byte-identical to the server's files, recorded in the manifest, nothing else."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert disk_files(out) == expected_files(series)
    folders = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir()}
    assert folders == {s.patient_id for s in series} | {f"{s.patient_id}/{s.uid}" for s in series}
    for s in series:
        entry = manifest["series"][s.uid]
        assert entry["status"] == "verified" and entry["md5_source"] == "server"
        assert entry["image_count"] == len(s.files) and entry["path"] == f"{s.patient_id}/{s.uid}"
        for name, data in s.files.items():
            assert (out / s.patient_id / s.uid / name).read_bytes() == data
            assert entry["files"][name]["md5"] == hashlib.md5(data).hexdigest()


def test_normal_download_then_ingest_and_resume(server, catalogue, tmp_path):
    out = tmp_path / "btp"
    rc = cli_main(["download", "--source", "tcia", "--collection", "Brain-Tumor-Progression", "--out", str(out),
                   "--api-url", server.base_url, *CLI_FAST])
    assert rc == 0
    assert_verified(out, images(catalogue))
    assert server.bad_params == []  # only whitelisted parameters were sent
    masks = [s.uid for s in catalogue if s.description == "MaskTumor"]
    assert masks and all(server.image_requests(uid) == [] for uid in masks)  # excluded by default, never fetched
    assert "CC BY 3.0" in (out / "LICENSE.txt").read_text()
    assert "10.7937/K9/TCIA.2018.15quzvnb" in (out / "CITATION.md").read_text()
    # the layout is what `mrsr ingest --source local` reads: every series, no file rejected
    from mrsr.data.ingest import ingest
    from mrsr.data.store import read_index

    summary = ingest("local", out, tmp_path / "store")
    assert summary["files_rejected"] == 0 and summary["series"] == len(images(catalogue))
    assert set(read_index(tmp_path / "store").series_uid) == {s.uid for s in images(catalogue)}
    # a rerun fetches nothing and still succeeds
    n = len(server.requests)
    report = download(server, out)
    assert report.ok and len(report.skipped) == len(images(catalogue)) and report.downloaded == []
    assert [ep for _, ep, _ in server.requests[n:]] == ["getSeries"]


def test_filters_patients_and_descriptions(server, catalogue, tmp_path):
    patient = catalogue[0].patient_id
    report = download(server, tmp_path / "o", patients=[patient.lower()], series_descriptions=["t1POST"])
    want = [s for s in catalogue if s.patient_id == patient and s.description == "T1post"]
    assert report.ok and sorted(report.downloaded) == sorted(s.uid for s in want)
    assert_verified(tmp_path / "o", want)


@pytest.mark.parametrize("name", ["Limited-Collection", "Brain-Tumour-Progresion"])
def test_empty_answer_is_an_error_that_says_what_to_do(server, tmp_path, capsys, name):
    rc = cli_main(["download", "--collection", name, "--out", str(tmp_path / "o"), "--api-url", server.base_url,
                   *CLI_FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert "returned no series" in err and "TCIA Data Retriever" in err and "data.source: local" in err
    assert not (tmp_path / "o" / "manifest.json").exists()
    with pytest.raises(CollectionNotAccessible):
        download_collection(name, tmp_path / "o", api_url=server.base_url, retry=FAST, pause=0, progress=False)


def test_5xx_then_success(server, catalogue, tmp_path):
    uid = images(catalogue)[0].uid
    server.faults[uid] = ["500", "503"]
    server.list_faults = ["502"]
    report = download(server, tmp_path / "o")
    assert report.ok and len(server.image_requests(uid)) == 3
    assert_verified(tmp_path / "o", images(catalogue))


@pytest.mark.parametrize("fault", ["drop", "missing", "badmd5", "json200", "slow"])
def test_a_bad_body_is_fetched_again(server, catalogue, tmp_path, fault):
    uid = images(catalogue)[1].uid
    server.faults[uid] = [fault]
    server.slow_seconds = 1.5
    t0 = time.monotonic()
    report = download(server, tmp_path / "o")
    assert report.ok, report.failed
    assert len(server.image_requests(uid)) == 2
    assert_verified(tmp_path / "o", images(catalogue))
    if fault == "slow":  # the read timeout (0.5 s) fired: the client did not wait for the 1.5 s stall
        assert time.monotonic() - t0 < 1.5 + 1.0


@pytest.mark.parametrize("fault,reason", [("missing", "ImageCount"), ("badmd5", "MD5 mismatch")])
def test_persistent_verification_failure_fails_the_series_and_leaves_nothing(server, catalogue, tmp_path, fault, reason, capsys):
    bad = images(catalogue)[0]
    server.faults[bad.uid] = [fault] * 10
    out = tmp_path / "o"
    rc = cli_main(["download", "--collection", "Brain-Tumor-Progression", "--out", str(out), "--api-url",
                   server.base_url, *CLI_FAST, "--retries", "3"])
    assert rc == 1 and reason in capsys.readouterr().err
    good = [s for s in images(catalogue) if s.uid != bad.uid]
    assert disk_files(out) == expected_files(good)
    assert bad.uid not in json.loads((out / "manifest.json").read_text())["series"]


def test_429_honours_retry_after(server, catalogue, tmp_path):
    uid = images(catalogue)[0].uid
    server.faults[uid] = ["429"]
    report = download(server, tmp_path / "o", series_descriptions=[images(catalogue)[0].description],
                      patients=[images(catalogue)[0].patient_id])
    assert report.ok
    first, second = server.image_requests(uid)[:2]
    assert second - first >= 1.0  # Retry-After: 1, although the backoff alone would be 10 ms


@pytest.mark.parametrize("fault", ["400", "404"])
def test_400_and_404_are_not_retried(server, catalogue, tmp_path, fault):
    uid = images(catalogue)[0].uid
    server.faults[uid] = [fault] * 5
    report = download(server, tmp_path / "o")
    assert not report.ok and f"HTTP {fault}" in report.failed[uid]
    assert len(server.image_requests(uid)) == 1


@pytest.mark.parametrize("fault", ["zipslip", "absolute"])
def test_zip_entries_outside_the_folder_are_refused(server, catalogue, tmp_path, fault):
    uid = images(catalogue)[0].uid
    server.faults[uid] = [fault] * 5
    out = tmp_path / "a" / "b" / "out"
    report = download(server, out)
    assert not report.ok and "path traversal" in report.failed[uid]
    assert len(server.image_requests(uid)) == 1  # unsafe content is refused, not retried
    assert list(tmp_path.parent.rglob("x")) == []
    assert not Path("/tmp/mrsr-absolute-x").exists()
    assert disk_files(out) == expected_files([s for s in images(catalogue) if s.uid != uid])


def test_every_fault_at_once_ends_verified_with_nothing_else_on_disk(server, catalogue, tmp_path):
    todo = images(catalogue)
    plan = [["500", "drop"], ["missing", "429"], ["badmd5", "slow"], ["503", "json200", "drop"], ["drop"], ["missing"]]
    for s, faults in zip(todo, plan):
        server.faults[s.uid] = list(faults)
    server.list_faults = ["503"]
    server.slow_seconds = 1.0
    out = tmp_path / "all"
    report = download(server, out, workers=2)
    assert report.ok, report.failed
    assert sorted(report.downloaded) == sorted(s.uid for s in todo)
    assert_verified(out, todo)  # includes: no staging folder, no .part file, nothing outside the layout
    assert server.bad_params == []


def test_a_killed_run_is_redone_not_trusted(server, catalogue, tmp_path):
    out = tmp_path / "o"
    todo = images(catalogue)
    assert download(server, out).ok
    a, b, c = todo[0], todo[1], todo[2]
    manifest = json.loads((out / "manifest.json").read_text())
    # a: killed after the rename but before the manifest entry; b: a file truncated later;
    # c: staging leftovers of a killed extraction (and its folder gone)
    del manifest["series"][a.uid]
    (out / "manifest.json").write_text(json.dumps(manifest))
    victim = next((out / b.patient_id / b.uid).iterdir())
    victim.write_bytes(victim.read_bytes()[:100])
    (out / ".partial" / f".{c.uid}.extract").mkdir(parents=True)
    (out / ".partial" / f".{c.uid}.extract" / ".1-01.dcm").write_bytes(b"half")
    (out / ".partial" / f".{c.uid}.zip.part").write_bytes(b"PK\x03\x04half")
    for p in (out / c.patient_id / c.uid).iterdir():
        p.unlink()
    (out / c.patient_id / c.uid).rmdir()
    n = {s.uid: len(server.image_requests(s.uid)) for s in todo}
    report = download(server, out)
    assert report.ok and sorted(report.downloaded) == sorted([a.uid, b.uid, c.uid])
    assert {s.uid for s in todo if len(server.image_requests(s.uid)) > n[s.uid]} == {a.uid, b.uid, c.uid}
    assert_verified(out, todo)


def test_secondary_capture_series_is_excluded_after_inspection(server, catalogue, tmp_path):
    """A mask whose description does not say so is recognised by its SOP class and not kept."""
    mask = next(s for s in catalogue if s.description == "MaskTumor")
    mask.description = "Tumor ROI export"
    try:
        report = download(server, tmp_path / "o")
    finally:
        mask.description = "MaskTumor"
    assert report.ok and "Secondary Capture" in report.excluded[mask.uid]
    assert not (tmp_path / "o" / mask.patient_id / mask.uid).exists()
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["series"][mask.uid]["status"] == "excluded"


def test_connection_refused_is_retried_then_reported(tmp_path):
    import socket

    with socket.socket() as sock:  # a port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=0.01, factor=2.0, jitter=0.0, sleep=sleeps.append)
    with pytest.raises(Exception, match="gave up after 3 attempts"):
        download_collection("Brain-Tumor-Progression", tmp_path / "o", api_url=f"http://127.0.0.1:{port}/",
                            retry=policy, pause=0, progress=False)
    assert sleeps == [0.01, 0.02]  # exponential backoff between the attempts


def test_client_sends_only_whitelisted_parameters():
    client = NbiaClient("http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="not accepted"):
        client._request("getImage", {"SeriesInstanceUID": "1.2", "format": "json"})


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=10.0, jitter=0.5)
    for k, base in enumerate([1, 2, 4, 8, 10, 10]):
        d = policy.delay(k)
        assert base <= d <= base * 1.5
    assert policy.delay(0, retry_after=30.0) >= 30.0
    assert RetryPolicy(max_retry_after=5.0).delay(0, retry_after=1e6) <= 7.5
    assert parse_retry_after("3") == 3.0 and parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/b.dcm", "..", ".hidden", "c:evil", "a\\b"])
def test_unsafe_entry_names(name):
    with pytest.raises(Exception, match="path traversal"):
        check_entry_name(name)


# ------------------------------------------------------ a hostile server: bounded ------------
CHILD = """
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a guard for the shared machine; the test checks the RSS
from mrsr.cli import main
t0 = time.monotonic()
rc = main(sys.argv[1:])
# VmHWM: this process's own peak. getrusage's ru_maxrss survives execve on Linux, so after a
# fork of a large test process it would report the parent's size, not ours.
peak_kb = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))
print("PEAK_RSS_KB", peak_kb, "SECONDS", time.monotonic() - t0)
sys.exit(rc)
"""


@pytest.mark.parametrize("mode,where,expected", [
    ("endless_json", "list", "exceeds the 128 MiB cap on JSON (--max-json-mb)"),
    ("endless_zip", "image", "ZIP larger than the"),
    ("drip", "image", "within the request deadline of 2 s (--request-deadline)"),
])
def test_hostile_server_ends_with_a_clear_error_in_bounded_time_and_memory(server, catalogue, tmp_path, mode, where, expected):
    """Default caps; deadlines small for the test's sake. The downloader runs in a child process whose
    peak RSS is measured; the server keeps streaming until the client hangs up."""
    import subprocess
    import sys

    target = images(catalogue)[0]
    server.hostile_seconds, server.drip_interval = 60.0, 0.5
    if where == "list":
        server.list_faults = [mode] * 3
    else:
        server.faults[target.uid] = [mode] * 3
        server.omit_file_size = mode == "endless_zip"  # then only ImageCount x 64 MiB bounds the body
    deadline = 20
    out = tmp_path / "o"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "download", "--collection", "Brain-Tumor-Progression", "--out", str(out),
         "--api-url", server.base_url, "--patients", target.patient_id, "--series-description", target.description,
         "--no-progress", "--backoff", "0.01", "--pause", "0", "--timeout", "2", "--retries", "2",
         "--request-deadline", "2", "--deadline", str(deadline)],
        capture_output=True, text=True, timeout=deadline + 30)
    assert result.returncode in (1, 2), result.stderr
    assert expected in result.stderr, result.stderr
    rss_kb, seconds = (float(v) for v in result.stdout.split("PEAK_RSS_KB")[1].split()[::2])
    print(mode, f"peak RSS {rss_kb / 1024:.0f} MB, {seconds:.1f} s")
    assert rss_kb / 1024 < 500 and seconds < deadline, (rss_kb, seconds)
    assert not (out / ".partial").exists() or not any((out / ".partial").iterdir())
    assert not (out / target.patient_id / target.uid).exists()


def test_run_deadline_stops_retrying_a_dripping_series(server, catalogue, tmp_path):
    from mrsr.data.tcia.client import Bounds

    target = images(catalogue)[0]
    server.faults[target.uid] = ["drip"] * 10
    server.drip_interval = 0.2
    t0 = time.monotonic()
    report = download(server, tmp_path / "o", bounds=Bounds(request_deadline=1.5, run_deadline=4.0))
    elapsed = time.monotonic() - t0
    assert elapsed < 6.0 and not report.ok
    assert "run's deadline" in report.failed[target.uid] and "--deadline" in report.failed[target.uid]


def test_a_body_below_the_minimum_rate_is_abandoned(server, catalogue, tmp_path):
    from mrsr.data.tcia.client import Bounds

    target = images(catalogue)[0]
    server.faults[target.uid] = ["drip"] * 2
    server.drip_interval = 0.05  # about 20 B/s
    report = download(server, tmp_path / "o", retry=RetryPolicy(attempts=2, base_delay=0.01),
                      bounds=Bounds(rate_grace=1.0, min_rate=1000))
    assert "below the minimum rate of 1000 B/s (--min-rate)" in report.failed[target.uid]
    assert len(report.downloaded) == len(images(catalogue)) - 1  # the others are not held up


def test_headers_dripping_are_cut_at_the_request_deadline(server, tmp_path):
    from mrsr.data.tcia.client import Bounds
    from mrsr.data.tcia.errors import DownloadError

    server.list_faults = ["drip_headers"] * 2
    server.drip_interval = 0.1
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"gave up after 2 attempts.*within the request deadline of 1 s"):
        download(server, tmp_path / "o", retry=RetryPolicy(attempts=2, base_delay=0.01), bounds=Bounds(request_deadline=1.0))
    assert time.monotonic() - t0 < 4.0


def test_a_zip_entry_that_is_not_dicom_stops_extraction_and_is_not_retried(server, catalogue, tmp_path):
    target = images(catalogue)[0]
    first = sorted(target.files)[0]
    original = target.files[first]
    target.files[first] = b"not a DICOM file at all" * 100
    try:
        report = download(server, tmp_path / "o")
    finally:
        target.files[first] = original
    assert f"ZIP entry {first} is not readable DICOM" in report.failed[target.uid]
    assert len(server.image_requests(target.uid)) == 1
    assert not (tmp_path / "o" / ".partial").exists() or not any((tmp_path / "o" / ".partial").iterdir())
