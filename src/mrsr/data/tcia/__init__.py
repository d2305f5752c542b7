"""``mrsr download --source tcia``: fetch a TCIA collection through the NBIA v4 REST API, verified.

Why it is this careful (details in docs/tcia-api.md): NBIA streams each series as a ZIP generated on the
fly, with no Content-Length and no Range support, and a 200 response can still carry a truncated ZIP
(dropped connection) or a valid ZIP missing images (a server-side read error). Limited-access or
misspelt collections answer 200 with an empty body rather than an error. So:

- only whitelisted parameters are sent (v4 answers 400 to any other); the base URL is configurable;
- each series' ZIP is streamed to a hidden temp file under DIR (never held in memory), checked
  (content type, ``PK`` magic, CRCs via ``testzip``, entry names, size bounds with a cap on the
  total uncompressed bytes), extracted into a hidden temp folder and renamed into place only after
  the image count (``ImageCount``), byte count (``FileSize``), MD5s (``IncludeMD5=Yes``) and the
  files' own SeriesInstanceUID agree;
- connection errors, timeouts, truncated bodies, 429 (honouring Retry-After) and 5xx are retried
  with exponential backoff and jitter, a failed verification re-downloads the series; 400/404 are not
  retried;
- a series counts as done only once it is recorded in ``DIR/manifest.json`` (metadata and MD5s),
  written atomically after the rename, so a killed run never leaves a series a rerun takes as done;
- nothing is written outside DIR: ZIP entries with paths (``../../x``, ``/abs``) are refused and
  PatientID/UIDs are checked before they become folder names;
- nothing a server sends is unbounded (:class:`Bounds`, :class:`ZipLimits`): a JSON answer is capped
  (``--max-json-mb``, 128 MiB); every request has a deadline for headers and body together
  (``--request-deadline``, 30 min) enforced on the socket, so a server dripping a byte a second
  cannot keep it alive, and a minimum average rate (``--min-rate``, 10 KiB/s after 30 s); the whole
  run has a deadline (``--deadline``, none by default); a ZIP body is capped by the series' FileSize
  (or ImageCount x 64 MiB without it) while it streams, must start as a ZIP, and its entries are
  checked one by one as they are extracted (the first that is not DICOM stops the series).

The layers: :mod:`mrsr.data.tcia.client` (requests, retries, bounds) over :mod:`mrsr.data.tcia.deadline`
(deadlines on the socket), :mod:`mrsr.data.tcia.zipcheck` (a series' ZIP checked and extracted),
:mod:`mrsr.data.tcia.errors`, and this module: the collection (selection, manifest, notes) and the command.

Layout: ``DIR/<PatientID>/<SeriesInstanceUID>/*.dcm``, ``DIR/manifest.json``, ``DIR/series.csv``,
``DIR/LICENSE.txt``, ``DIR/CITATION.md``; ``mrsr ingest --source local --input DIR`` reads it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import fnmatch
import hashlib
import json
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrsr.data.tcia.client import DEFAULT_API_URL, Bounds, NbiaClient, RetryPolicy, with_retries
from mrsr.data.tcia.errors import CollectionNotAccessible, DownloadError
from mrsr.data.tcia.zipcheck import ZipLimits, as_int, extract_verified, safe_component, validate_zip
from mrsr.io import write_csv, write_json, write_text

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DEFAULT_EXCLUDE_DESCRIPTIONS = ("*mask*",)  # Brain-Tumor-Progression's MaskTumor (Secondary Capture)
STAGING = ".partial"  # hidden: `mrsr ingest` skips dot names
TCIA_CITATION = ("Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): Maintaining and Operating "
                 "a Public Information Repository. J Digit Imaging 2013;26(6):1045-1057. doi:10.1007/s10278-013-9622-7")
KNOWN_CITATIONS = {
    "brain-tumor-progression": "Schmainda KM, Prah M (2018). Data from Brain-Tumor-Progression. The Cancer Imaging "
                               "Archive. https://doi.org/10.7937/K9/TCIA.2018.15quzvnb",
}


class Manifest:
    """``DIR/manifest.json``: one entry per finished series (verified, or excluded as non-image).

    Written atomically after every change, under a lock (series finish in worker threads).
    """

    def __init__(self, out_dir: Path, collection: str, api_url: str) -> None:
        self.path = out_dir / "manifest.json"
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"format": 1, "collection": collection, "api_url": api_url, "series": {}}
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(old.get("series"), dict):
                    self.data["series"] = old["series"]
            except (OSError, ValueError):
                pass  # unreadable manifest: trust nothing, re-verify everything

    def entry(self, uid: str) -> dict | None:
        return self.data["series"].get(uid)

    def record(self, uid: str, entry: dict) -> None:
        with self.lock:
            self.data["series"][uid] = entry
            self.data["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            write_json(self.path, self.data)

    def forget(self, uid: str) -> None:
        with self.lock:
            if self.data["series"].pop(uid, None) is not None:
                write_json(self.path, self.data)


@dataclass
class DownloadReport:
    """What a run did; ``ok`` is True only when every selected series is verified (or excluded)."""

    out_dir: Path
    selected: int = 0
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # verified by an earlier run
    excluded: dict[str, str] = field(default_factory=dict)  # uid -> why (non-image)
    failed: dict[str, str] = field(default_factory=dict)  # uid -> last error

    @property
    def ok(self) -> bool:
        return not self.failed and len(self.downloaded) + len(self.skipped) + len(self.excluded) == self.selected


def _is_complete(entry: dict | None, meta: dict, out_dir: Path, recheck: bool) -> bool:
    """A manifest entry still matches the server's metadata and the files on disk."""
    if not entry or entry.get("status") not in ("verified", "excluded"):
        return False
    if as_int(entry.get("image_count")) != as_int(meta.get("ImageCount")) or as_int(entry.get("file_size")) != as_int(meta.get("FileSize")):
        return False
    if entry["status"] == "excluded":
        return True
    folder = out_dir / entry["path"]
    if not folder.is_dir() or sorted(p.name for p in folder.iterdir()) != sorted(entry["files"]):
        return False
    for name, info in entry["files"].items():
        f = folder / name
        if f.stat().st_size != info["size"]:
            return False
        if recheck and hashlib.md5(f.read_bytes()).hexdigest() != info["md5"]:
            return False
    return True


def select_series(series: list[dict], patients: list[str] | None, descriptions: list[str] | None,
                  modality: str, include_non_image: bool) -> list[dict]:
    """Filter getSeries rows: modality, patients (case-insensitive), descriptions (glob, case-insensitive)."""
    wanted_patients = {p.upper() for p in patients or []}
    out, seen = [], set()
    for row in series:
        desc = str(row.get("SeriesDescription", "") or "")
        if row.get("SeriesInstanceUID") in seen:
            continue
        seen.add(row.get("SeriesInstanceUID"))
        if str(row.get("Modality", "")).upper() != modality.upper():
            continue
        if wanted_patients and str(row.get("PatientID", "")).upper() not in wanted_patients:
            continue
        if descriptions and not any(fnmatch.fnmatch(desc.lower(), d.lower()) for d in descriptions):
            continue
        if not include_non_image and any(fnmatch.fnmatch(desc.lower(), d) for d in DEFAULT_EXCLUDE_DESCRIPTIONS):
            continue
        out.append(row)
    return sorted(out, key=lambda r: (str(r.get("PatientID")), str(r.get("SeriesInstanceUID"))))


def _not_accessible(client: NbiaClient, collection: str) -> CollectionNotAccessible:
    listed = None
    try:
        names = {str(r.get("Collection", "")).lower() for r in client.get_json("getCollectionValues", {"format": "json"})}
        listed = collection.lower() in names
    except DownloadError:
        pass
    why = {True: "it is listed among NBIA's public collections but returned no MR series",
           False: "it is not among the collections NBIA shows anonymous users (misspelt, or not public)",
           None: "NBIA answers a misspelt or limited-access collection with an empty list, not an error"}[listed]
    return CollectionNotAccessible(
        f"NBIA ({client.api_url}) returned no series for collection {collection!r}: {why}. "
        "Check the name on https://www.cancerimagingarchive.net/browse-collections/. If the collection is "
        "limited or controlled access (Brain-Tumor-Progression became limited access in 2022), request access, "
        "download it with the TCIA Data Retriever, then set `data.source: local` with `data.local_dir` pointing at "
        "that folder (or run `mrsr ingest --source local --input FOLDER`).")


def _write_notes(out_dir: Path, collection: str, rows: list[dict], license_text: str | None) -> None:
    """LICENSE.txt and CITATION.md beside the data: the licence travels with the files."""
    first = rows[0] if rows else {}
    name, uri = first.get("LicenseName", "see the collection page"), first.get("LicenseURI", "")
    doi = first.get("DataDescriptionURI", "")
    if license_text or not (out_dir / "LICENSE.txt").exists():
        write_text(out_dir / "LICENSE.txt", (license_text or
                   f"The {collection} collection is distributed under the {name} at {uri}. By downloading the data, "
                   "you agree to abide by terms of this license.").strip() + "\n")
    cite = KNOWN_CITATIONS.get(collection.lower(), f"Data from {collection}. The Cancer Imaging Archive. {doi}")
    write_text(out_dir / "CITATION.md", "\n".join([
        f"# {collection}: licence and citation", "",
        f"Downloaded from The Cancer Imaging Archive (TCIA) through the NBIA v4 API by `mrsr download` "
        f"on {dt.date.today().isoformat()}.", "",
        f"- Licence: {name} {uri}".rstrip(), f"- Data description / DOI: {doi or 'see the collection page'}",
        "- Users must also abide by the TCIA Data Usage Policy: https://wiki.cancerimagingarchive.net/x/c4hF", "",
        "Please cite:", "", f"- {cite}", f"- {TCIA_CITATION}", ""]))


def _download_series(client: NbiaClient, meta: dict, out_dir: Path, limits: ZipLimits, manifest: Manifest,
                     include_non_image: bool, on_bytes: Callable[[int], None], licenses: list[str]) -> str:
    """Download, verify and install one series; returns "verified" or "excluded: why"."""
    uid = safe_component(meta.get("SeriesInstanceUID", ""), "uid")
    patient = safe_component(meta.get("PatientID", "") or "unknown", "patient")
    staging = out_dir / STAGING
    staging.mkdir(exist_ok=True)
    zip_path, tmp_dir = staging / f".{uid}.zip.part", staging / f".{uid}.extract"
    cap = limits.series_cap(meta)

    def attempt() -> tuple[dict[str, dict], set[str], str | None, bool]:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        try:
            client.fetch_zip(uid, zip_path, cap, on_bytes)
            images, md5s, license_text = validate_zip(zip_path, meta, limits)
            tmp_dir.mkdir()
            files, sop_classes = extract_verified(zip_path, images, md5s, tmp_dir, uid)
            return files, sop_classes, license_text, md5s is not None
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        finally:
            zip_path.unlink(missing_ok=True)

    manifest.forget(uid)  # from here on the series is not done until it is recorded again
    files, sop_classes, license_text, server_md5 = with_retries(attempt, client.retry, f"series {uid}", client.stop_at)
    entry = {
        "status": "verified", "patient_id": meta.get("PatientID"), "study_uid": meta.get("StudyInstanceUID"),
        "series_description": meta.get("SeriesDescription"), "modality": meta.get("Modality"),
        "image_count": as_int(meta.get("ImageCount")), "file_size": as_int(meta.get("FileSize")),
        "license_name": meta.get("LicenseName"), "license_uri": meta.get("LicenseURI"),
        "data_description_uri": meta.get("DataDescriptionURI"), "sop_classes": sorted(sop_classes),
        "md5_source": "server" if server_md5 else "computed", "path": f"{patient}/{uid}",
        "files": files, "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if license_text:
        licenses.append(license_text)
    final = out_dir / patient / uid
    if not include_non_image and sop_classes and all(c.startswith(SECONDARY_CAPTURE_PREFIX) for c in sop_classes):
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        why = "Secondary Capture images (masks or screenshots), not MR acquisitions"
        manifest.record(uid, {**entry, "status": "excluded", "reason": why, "files": {}})
        return f"excluded: {why}"
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        shutil.rmtree(final)
    tmp_dir.replace(final)  # atomic: the folder appears complete or not at all
    manifest.record(uid, entry)  # ...and counts as done only now
    return "verified"


def download_collection(
    collection: str,
    out_dir: str | Path,
    *,
    api_url: str = DEFAULT_API_URL,
    patients: list[str] | None = None,
    series_descriptions: list[str] | None = None,
    modality: str = "MR",
    include_non_image: bool = False,
    workers: int = 2,
    retry: RetryPolicy = RetryPolicy(),
    timeout: tuple[float, float] = (10.0, 300.0),
    limits: ZipLimits = ZipLimits(),
    bounds: Bounds = Bounds(),
    pause: float = 0.25,
    recheck: bool = False,
    progress: bool = True,
) -> DownloadReport:
    """Download every selected series of ``collection`` into ``out_dir``, verified and resumable.

    Args:
        collection: TCIA collection name, e.g. "Brain-Tumor-Progression".
        out_dir: output folder (``DIR/<PatientID>/<SeriesInstanceUID>/*.dcm`` + manifest.json).
        api_url: NBIA v4 base URL (a loopback server in tests).
        patients: PatientIDs to keep (None: all).
        series_descriptions: SeriesDescription globs to keep, case-insensitive (None: all).
        modality: only series of this modality (MR).
        include_non_image: keep masks / Secondary Capture series (excluded by default).
        workers: series downloaded in parallel (NBIA is a shared service: keep it modest).
        retry, timeout, limits, pause: network behaviour (tests make them tiny).
        bounds: deadlines (per request, per run), minimum rate and JSON cap.
        recheck: re-hash already verified series instead of checking names and sizes.
        progress: show tqdm bars (series and bytes).

    Raises:
        CollectionNotAccessible: NBIA returned no series for the collection.
        DownloadError: nothing matched the filters, or the series list could not be fetched
            (DeadlineExceeded: not within the run's deadline).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = NbiaClient(api_url, timeout=timeout, retry=retry, pause=pause, bounds=bounds)
    rows = client.get_json("getSeries", {"Collection": collection, "Modality": modality, "format": "json"})
    if not rows:
        raise _not_accessible(client, collection)
    selected = select_series(rows, patients, series_descriptions, modality, include_non_image)
    if not selected:
        descs = sorted({str(r.get("SeriesDescription", "")) for r in rows})
        raise DownloadError(f"{len(rows)} series in {collection!r}, none matching patients={patients} "
                            f"series_descriptions={series_descriptions}; descriptions there: {descs[:20]}")
    shutil.rmtree(out_dir / STAGING, ignore_errors=True)  # leftovers of a killed run
    manifest = Manifest(out_dir, collection, client.api_url)
    report = DownloadReport(out_dir, selected=len(selected))
    todo = []
    for meta in selected:
        uid = str(meta.get("SeriesInstanceUID"))
        entry = manifest.entry(uid)
        if _is_complete(entry, meta, out_dir, recheck):
            (report.excluded.__setitem__(uid, entry.get("reason", "")) if entry["status"] == "excluded"
             else report.skipped.append(uid))
        else:
            todo.append(meta)
    import pandas as pd
    from tqdm import tqdm

    write_csv(out_dir / "series.csv", pd.DataFrame(selected))
    licenses: list[str] = []
    bar_lock = threading.Lock()
    series_bar = tqdm(total=len(selected), initial=len(selected) - len(todo), unit="series", desc=collection,
                      disable=not progress)
    bytes_bar = tqdm(unit="B", unit_scale=True, unit_divisor=1024, desc="received", disable=not progress)

    def on_bytes(n: int) -> None:
        with bar_lock:
            bytes_bar.update(n)

    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(_download_series, client, meta, out_dir, limits, manifest, include_non_image,
                               on_bytes, licenses): str(meta.get("SeriesInstanceUID")) for meta in todo}
        for fut in concurrent.futures.as_completed(futures):
            uid = futures[fut]
            try:
                outcome = fut.result()
                if outcome.startswith("excluded"):
                    report.excluded[uid] = outcome.split(": ", 1)[1]
                else:
                    report.downloaded.append(uid)
            except Exception as exc:  # one series failing does not stop the others
                report.failed[uid] = f"{type(exc).__name__}: {exc}"
            with bar_lock:
                series_bar.update(1)
    series_bar.close()
    bytes_bar.close()
    _write_notes(out_dir, collection, selected, licenses[0] if licenses else None)
    staging = out_dir / STAGING
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", choices=["tcia"], default="tcia", help="data source (only tcia downloads)")
    parser.add_argument("--collection", required=True, help="TCIA collection, e.g. Brain-Tumor-Progression")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--api-url", default=DEFAULT_API_URL, help="NBIA v4 base URL")
    parser.add_argument("--patients", nargs="*", default=None, help="PatientIDs to download (default: all)")
    parser.add_argument("--series-description", dest="series_descriptions", nargs="*", default=None,
                        help="SeriesDescription globs to keep, e.g. T1post FLAIRreg (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="series in parallel (default 2)")
    parser.add_argument("--include-non-image", action="store_true", help="keep masks / Secondary Capture series")
    parser.add_argument("--recheck", action="store_true", help="re-hash series verified by earlier runs")
    parser.add_argument("--retries", type=int, default=5, help="attempts per request or series (default 5)")
    parser.add_argument("--backoff", type=float, default=5.0, help="first retry delay in s, doubled each time (default 5)")
    parser.add_argument("--timeout", type=float, default=300.0, help="read timeout in s (default 300)")
    parser.add_argument("--pause", type=float, default=0.25, help="delay before each request in s (default 0.25)")
    default = Bounds()
    parser.add_argument("--deadline", type=float, default=None, metavar="S",
                        help="stop the whole download after S seconds (default: no limit); rerun to resume")
    parser.add_argument("--request-deadline", type=float, default=default.request_deadline, metavar="S",
                        help=f"seconds for one request, headers and body (default {default.request_deadline:g})")
    parser.add_argument("--min-rate", type=float, default=default.min_rate, metavar="B",
                        help=f"bytes/s a download must average after {default.rate_grace:g} s (default {default.min_rate:g})")
    parser.add_argument("--max-json-mb", type=float, default=default.max_json_bytes / 2**20, metavar="MB",
                        help=f"largest JSON answer read (default {default.max_json_bytes // 2**20})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        report = download_collection(
            args.collection, args.out, api_url=args.api_url, patients=args.patients,
            series_descriptions=args.series_descriptions, workers=args.workers,
            include_non_image=args.include_non_image,
            retry=RetryPolicy(attempts=max(1, args.retries), base_delay=args.backoff),
            timeout=(10.0, args.timeout), pause=args.pause, recheck=args.recheck, progress=not args.no_progress,
            bounds=Bounds(request_deadline=args.request_deadline, run_deadline=args.deadline, min_rate=args.min_rate,
                          max_json_bytes=int(args.max_json_mb * 2**20)))
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.collection}: {len(report.downloaded)} series downloaded, {len(report.skipped)} already verified, "
          f"{len(report.excluded)} excluded (non-image), {len(report.failed)} failed, into {report.out_dir}")
    for uid, why in sorted(report.failed.items()):
        print(f"failed: {uid}: {why}", file=sys.stderr)
    if not report.ok:
        print("error: not every series is complete and verified; run the same command again to resume",
              file=sys.stderr)
    return 0 if report.ok else 1
