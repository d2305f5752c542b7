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

Layout: ``DIR/<PatientID>/<SeriesInstanceUID>/*.dcm``, ``DIR/manifest.json``, ``DIR/series.csv``,
``DIR/LICENSE.txt``, ``DIR/CITATION.md``; ``mrsr ingest --source local --input DIR`` reads it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import email.utils
import fnmatch
import hashlib
import http.client
import json
import random
import re
import shutil
import socket
import stat
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection

from mrsr.io import write_csv, write_json, write_text

DEFAULT_API_URL = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4/"
USER_AGENT = "mrsr-download/0.1 (MR super-resolution reproduction; python-requests)"
ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "getCollectionValues": frozenset({"format"}),
    "getSeries": frozenset({"Collection", "PatientID", "StudyInstanceUID", "Modality", "BodyPartExamined",
                            "ManufacturerModelName", "Manufacturer", "SeriesInstanceUID", "format"}),
    "getImage": frozenset({"SeriesInstanceUID", "NewFileNames", "IncludeMD5"}),
}
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DEFAULT_EXCLUDE_DESCRIPTIONS = ("*mask*",)  # Brain-Tumor-Progression's MaskTumor (Secondary Capture)
NON_IMAGE_ENTRIES = frozenset({"LICENSE", "md5hashes.csv"})
STAGING = ".partial"  # hidden: `mrsr ingest` skips dot names
TCIA_CITATION = ("Clark K, Vendt B, Smith K, et al. The Cancer Imaging Archive (TCIA): Maintaining and Operating "
                 "a Public Information Repository. J Digit Imaging 2013;26(6):1045-1057. doi:10.1007/s10278-013-9622-7")
KNOWN_CITATIONS = {
    "brain-tumor-progression": "Schmainda KM, Prah M (2018). Data from Brain-Tumor-Progression. The Cancer Imaging "
                               "Archive. https://doi.org/10.7937/K9/TCIA.2018.15quzvnb",
}


class DownloadError(RuntimeError):
    """A download that cannot succeed as asked (not retried further)."""


class CollectionNotAccessible(DownloadError):
    """NBIA returned no series: a misspelt name, or a limited/controlled-access collection."""


class RetryableError(DownloadError):
    """A transient failure: connection, timeout, truncated body, 429/5xx, or a series that failed checks."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: delay_k = min(max_delay, base * factor**k) * U(1, 1 + jitter).

    A server's Retry-After (capped at ``max_retry_after``) is waited at least. Tests pass tiny delays.
    """

    attempts: int = 5
    base_delay: float = 5.0
    factor: float = 2.0
    max_delay: float = 120.0
    jitter: float = 0.5
    max_retry_after: float = 600.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        d = min(self.max_delay, self.base_delay * self.factor**attempt) * (1 + self.jitter * random.random())
        return max(d, min(retry_after, self.max_retry_after)) if retry_after is not None else d


@dataclass(frozen=True)
class ZipLimits:
    """Bounds for one series ZIP (zip-bomb and runaway-stream guards), on the body as it streams
    and on the uncompressed entries before extraction.

    With FileSize known, the body and the uncompressed total may exceed it by ``slack_fraction`` +
    ``slack_bytes`` (LICENSE, md5hashes.csv); without it, ``max_image_bytes`` per image of
    ImageCount; without either, ``max_series_bytes``. All are capped by ``max_series_bytes``.
    """

    max_series_bytes: int = 4 * 2**30
    max_image_bytes: int = 64 * 2**20  # a single-frame MR image is < 2 MiB; enhanced multi-frame files more
    slack_fraction: float = 0.05
    slack_bytes: int = 1 * 2**20
    max_extra_entries: int = 8
    max_ratio: float = 1000.0

    def series_cap(self, meta: dict) -> int:
        """The most bytes a series' ZIP (and its uncompressed entries) may hold."""
        size, count = _int(meta.get("FileSize")), _int(meta.get("ImageCount"))
        if size is not None:
            expected = size
        elif count is not None:
            expected = count * self.max_image_bytes
        else:
            return self.max_series_bytes
        return min(self.max_series_bytes, int(expected * (1 + self.slack_fraction)) + self.slack_bytes)


@dataclass(frozen=True)
class Bounds:
    """Time and size bounds on what a server may send (a hostile or broken one included).

    Args:
        request_deadline: seconds for one request, headers and body together (enforced on the
            socket: a server that drips bytes keeps every read under the read timeout).
        run_deadline: seconds for the whole download (None: no limit); no request outlives it.
        min_rate: bytes/s a body must average once it has run ``rate_grace`` seconds.
        rate_grace: seconds before ``min_rate`` applies (connection set-up, a slow start).
        max_json_bytes: the largest JSON answer read (a series list; 1.5 KB per series).
    """

    request_deadline: float = 1800.0
    run_deadline: float | None = None
    min_rate: float = 10 * 1024
    rate_grace: float = 30.0
    max_json_bytes: int = 128 * 2**20


class DeadlineExceeded(DownloadError):
    """The run's deadline passed: nothing is retried any more."""


# ----------------------------------------------------------------------------------------------
# deadlines on the socket
class _Expiry:
    """One request's deadline: a timer shuts its socket down when it passes.

    Why on the socket: a read timeout applies to each read, so a server sending one byte a second
    (in the headers or the body) keeps a request alive for ever; shutting the socket down makes the
    blocked read return at once, whatever urllib3 and http.client were doing.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + max(0.0, seconds)
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            expired = self.expired
        if expired and sock is not None:
            _shutdown(sock)

    @property
    def passed(self) -> bool:
        """Whether the deadline has passed (the timer may fire a moment late)."""
        return self.expired or time.monotonic() >= self.at

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already


_current = threading.local()  # the _Expiry of the request this thread is making


class _DeadlineConnectionMixin:
    def getresponse(self, *args, **kwargs):  # called once the request is sent, before the headers are read
        expiry = getattr(_current, "expiry", None)
        if expiry is not None:
            expiry.attach(self.sock)
        return super().getresponse(*args, **kwargs)


class _DeadlineHTTPConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _DeadlineHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections that hand their socket to the request's :class:`_Expiry`."""

    POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self.POOLS)

    def proxy_manager_for(self, *args, **kwargs):
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = dict(self.POOLS)
        return manager


def with_retries(action: Callable[[], Any], policy: RetryPolicy, what: str, stop_at: float | None = None) -> Any:
    """Run ``action`` until it succeeds, retrying :class:`RetryableError` and transient network errors.

    Args:
        action: one attempt.
        policy: attempts and backoff.
        what: named in the final error.
        stop_at: ``time.monotonic()`` of the run's deadline: no retry waits past it.
    """
    last: Exception | None = None
    for attempt in range(policy.attempts):
        try:
            return action()
        except (RetryableError, requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            last = exc
            if attempt + 1 < policy.attempts:
                delay = policy.delay(attempt, getattr(exc, "retry_after", None))
                if stop_at is not None and time.monotonic() + delay >= stop_at:
                    raise DeadlineExceeded(f"{what}: the run's deadline (--deadline) passes before the next "
                                           f"attempt; last error: {exc}") from exc
                policy.sleep(delay)
    raise DownloadError(f"{what}: gave up after {policy.attempts} attempts; last error: {last}")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


class NbiaClient:
    """A thin NBIA v4 client: whitelisted parameters, status handling, one session per thread, and
    every answer bounded in size and time (:class:`Bounds`)."""

    def __init__(self, api_url: str = DEFAULT_API_URL, timeout: tuple[float, float] = (10.0, 300.0),
                 retry: RetryPolicy = RetryPolicy(), pause: float = 0.0, bounds: Bounds = Bounds()) -> None:
        self.api_url = api_url.rstrip("/") + "/"
        self.timeout = timeout
        self.retry = retry
        self.pause = pause  # politeness delay before each request (the Data Retriever uses 0.5 s)
        self.bounds = bounds
        self.stop_at = None if bounds.run_deadline is None else time.monotonic() + bounds.run_deadline
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            for prefix in ("http://", "https://"):
                session.mount(prefix, _DeadlineAdapter())
            self._local.session = session
        return self._local.session

    def _request(self, endpoint: str, params: dict[str, str]) -> requests.Response:
        """Send one GET (streamed: the body is read by the caller, bounded); raises on a bad status."""
        unknown = set(params) - ALLOWED_PARAMS[endpoint]
        if unknown:  # v4 answers 400 to any parameter outside its whitelist: fail before asking
            raise ValueError(f"{endpoint}: parameters {sorted(unknown)} are not accepted by NBIA v4")
        if self.pause:
            time.sleep(self.pause)
        resp = self.session.get(self.api_url + endpoint, params=params, timeout=self.timeout, stream=True)
        if resp.status_code in RETRY_STATUS:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            resp.close()
            raise RetryableError(f"{endpoint}: HTTP {resp.status_code}", retry_after)
        if resp.status_code != 200:
            text = next(resp.iter_content(chunk_size=300), b"").decode("utf-8", "replace").strip()
            resp.close()
            raise DownloadError(f"{endpoint} {params}: HTTP {resp.status_code}: {text}")
        return resp

    @contextlib.contextmanager
    def _exchange(self, endpoint: str, params: dict[str, str]) -> Iterator[tuple[requests.Response, _Expiry]]:
        """One request under its deadline (and the run's): yields (response, its expiry).

        Errors after the deadline passed (the socket was shut down under them) become a clear
        RetryableError, or DeadlineExceeded when it was the run's deadline.
        """
        seconds = self.bounds.request_deadline
        run_bound = self.stop_at is not None and self.stop_at - time.monotonic() <= seconds
        if self.stop_at is not None:
            seconds = min(seconds, self.stop_at - time.monotonic())
            if seconds <= 0:
                raise DeadlineExceeded(f"{endpoint}: the run's deadline of {self.bounds.run_deadline:g} s "
                                       "(--deadline) has passed")
        expiry = _Expiry(seconds)
        _current.expiry = expiry
        try:
            with self._request(endpoint, params) as resp:
                _current.expiry = None
                yield resp, expiry
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, RetryableError) as exc:
            if not expiry.passed:
                raise
            if run_bound:
                raise DeadlineExceeded(f"{endpoint}: stopped at the run's deadline of {self.bounds.run_deadline:g} s "
                                       "(--deadline)") from exc
            raise RetryableError(f"{endpoint}: no complete answer within the request deadline of "
                                 f"{self.bounds.request_deadline:g} s (--request-deadline)") from exc
        finally:
            expiry.cancel()
            _current.expiry = None

    def _read_body(self, resp: requests.Response, expiry: _Expiry, what: str,
                   on_chunk: Callable[[bytes], None]) -> int:
        """Read a body as it arrives, bounded in time; returns the bytes read.

        ``read1`` returns whatever has arrived, so a dripping server hands control back here after
        every drip: the minimum rate and the deadline are checked between reads (the socket
        shutdown of :class:`_Expiry` ends a read that blocks).
        """
        started, received = time.monotonic(), 0
        try:
            while chunk := resp.raw.read1(1 << 16, decode_content=True):
                received += len(chunk)
                on_chunk(chunk)
                elapsed = time.monotonic() - started
                if expiry.passed:
                    raise OSError("deadline passed")  # turned into the deadline's error by _exchange
                if elapsed > self.bounds.rate_grace and received < self.bounds.min_rate * elapsed:
                    raise RetryableError(f"{what}: {received} bytes in {elapsed:.0f} s, below the minimum rate of "
                                         f"{self.bounds.min_rate:g} B/s (--min-rate)")
            if expiry.passed:  # a body without a length "ends" when its socket is shut down
                raise OSError("deadline passed")
        except (urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:
            raise RetryableError(f"{what}: body cut short ({type(exc).__name__}: {exc})") from exc
        return received

    def get_json(self, endpoint: str, params: dict[str, str]) -> list[dict]:
        """A v4 JSON list; NBIA's empty body (no match, or no access) becomes ``[]``.

        The body is read up to ``bounds.max_json_bytes`` (an endless answer is an error, not memory).
        """
        cap = self.bounds.max_json_bytes

        def once() -> list[dict]:
            body = bytearray()

            def keep(chunk: bytes) -> None:
                if len(body) + len(chunk) > cap:
                    raise DownloadError(f"{endpoint}: the answer exceeds the {cap // 2**20} MiB cap on JSON "
                                        "(--max-json-mb): refused")
                body.extend(chunk)

            with self._exchange(endpoint, params) as (resp, expiry):
                self._read_body(resp, expiry, endpoint, keep)
            if not body.strip():
                return []
            try:
                data = json.loads(body)
            except ValueError as exc:
                raise RetryableError(f"{endpoint}: body is not JSON ({bytes(body[:80])!r})") from exc
            if not isinstance(data, list):
                raise DownloadError(f"{endpoint}: expected a JSON array, got {type(data).__name__}")
            return data

        return with_retries(once, self.retry, endpoint, self.stop_at)

    def fetch_zip(self, uid: str, dest: Path, max_bytes: int, on_bytes: Callable[[int], None]) -> int:
        """One attempt to stream a series ZIP to ``dest``, at most ``max_bytes``; returns the bytes received.

        A body that does not start as a ZIP is refused at its first bytes, not after gigabytes.
        """
        params = {"SeriesInstanceUID": uid, "NewFileNames": "Yes", "IncludeMD5": "Yes"}
        with self._exchange("getImage", params) as (resp, expiry):
            ctype = resp.headers.get("Content-Type", "").lower()
            if ctype.startswith("text/") or ctype.startswith("application/json"):
                head = next(resp.iter_content(chunk_size=200), b"")  # an error text; never read a big body whole
                raise RetryableError(f"series {uid}: got {ctype} instead of a ZIP: {head[:200]!r}")
            with open(dest, "wb") as fh:
                head = bytearray()

                def write(chunk: bytes) -> None:
                    if len(head) < 4:
                        head.extend(chunk[: 4 - len(head)])
                        if len(head) == 4 and head != b"PK\x03\x04":
                            raise RetryableError(f"series {uid}: the body is not a ZIP (starts {bytes(head)!r})")
                    if fh.tell() + len(chunk) > max_bytes:
                        raise DownloadError(f"series {uid}: ZIP larger than the {max_bytes}-byte cap "
                                            "(FileSize, or ImageCount x 64 MiB without it): refused")
                    fh.write(chunk)
                    on_bytes(len(chunk))

                return self._read_body(resp, expiry, f"series {uid}", write)


# ----------------------------------------------------------------------------------------------
# checks
def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def safe_component(value: str, what: str) -> str:
    """A server-given name usable as one folder name inside DIR, or DownloadError."""
    value = str(value).strip()
    if what == "uid" and re.fullmatch(r"[0-9]+(\.[0-9]+)*", value) and len(value) <= 64:
        return value
    if what == "patient":
        cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._")
        if cleaned:
            return cleaned[:128]
    raise DownloadError(f"unsafe {what} {value!r}: refused as a folder name")


def check_entry_name(name: str) -> None:
    """Only plain file names: NBIA ZIPs have no folders, so any path (``../../x``, ``/abs``, ``a\\b``) is refused."""
    if (not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\:\x00")
            or name != name.strip()):
        raise DownloadError(f"ZIP entry {name!r} is not a plain file name: refused (path traversal guard)")


def validate_zip(path: Path, meta: dict, limits: ZipLimits) -> tuple[list[zipfile.ZipInfo], dict[str, str] | None, str | None]:
    """Structural checks before extraction; returns (image entries, server MD5s or None, LICENSE text).

    Raises RetryableError for what a re-download can fix (truncation, CRC, missing images) and
    DownloadError for what it cannot (unsafe names, sizes over the caps).
    """
    uid = meta["SeriesInstanceUID"]
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04" or not zipfile.is_zipfile(path):
        raise RetryableError(f"series {uid}: not a complete ZIP (truncated body or error page)")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            for info in infos:
                check_entry_name(info.filename)
                if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                    raise DownloadError(f"series {uid}: ZIP entry {info.filename!r} is a link or folder: refused")
            if len(set(names)) != len(names):
                raise DownloadError(f"series {uid}: duplicate ZIP entry names")
            images = [i for i in infos if i.filename not in NON_IMAGE_ENTRIES]
            expected = _int(meta.get("ImageCount"))
            if expected is not None and len(infos) > expected + limits.max_extra_entries:
                raise DownloadError(f"series {uid}: {len(infos)} ZIP entries for {expected} images")
            size = _int(meta.get("FileSize"))
            cap = limits.series_cap(meta)
            total = sum(i.file_size for i in infos)
            if total > cap:
                raise DownloadError(f"series {uid}: {total} uncompressed bytes exceed the cap of {cap}")
            for i in infos:
                if i.file_size > 2**20 and i.file_size > limits.max_ratio * max(i.compress_size, 1):
                    raise DownloadError(f"series {uid}: entry {i.filename} has a zip-bomb compression ratio")
            bad = zf.testzip()
            if bad is not None:
                raise RetryableError(f"series {uid}: CRC error in ZIP entry {bad}")
            md5s = None
            if "md5hashes.csv" in names:
                lines = zf.read("md5hashes.csv").decode("utf-8", "replace").splitlines()
                md5s = {}
                for line in lines[1:]:
                    if "," in line:
                        fname, digest = line.rsplit(",", 1)
                        md5s[fname.strip().strip('"')] = digest.strip().strip('"').lower()
            license_text = zf.read("LICENSE").decode("utf-8", "replace") if "LICENSE" in names else None
    except zipfile.BadZipFile as exc:
        raise RetryableError(f"series {uid}: bad ZIP: {exc}") from exc
    if expected is not None and len(images) != expected:
        raise RetryableError(f"series {uid}: ZIP holds {len(images)} images, ImageCount is {expected}")
    if size is not None and sum(i.file_size for i in images) != size:
        raise RetryableError(f"series {uid}: images total {sum(i.file_size for i in images)} bytes, FileSize is {size}")
    return images, md5s, license_text


def extract_verified(path: Path, images: list[zipfile.ZipInfo], md5s: dict[str, str] | None, into: Path,
                     uid: str) -> tuple[dict[str, dict], set[str]]:
    """Write the images into ``into``, checking MD5s and each file's SeriesInstanceUID.

    Files carry hidden names (``.1-01.dcm``) until every check passed, so an interrupted extraction
    is never read as data. Each entry is checked as soon as it is out (MD5, DICOM header, series),
    so a bad one stops the extraction there instead of after the whole series is on disk; an entry
    that is not DICOM is not retried (its CRC matched: the server holds exactly that). Returns
    ({name: {size, md5}}, the files' SOP Class UIDs).
    """
    import pydicom

    files: dict[str, dict] = {}
    sop_classes: set[str] = set()
    with zipfile.ZipFile(path) as zf:
        for info in images:
            digest, n = hashlib.md5(), 0
            with zf.open(info) as src, open(into / f".{info.filename}", "xb") as dst:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    dst.write(chunk)
                    n += len(chunk)
            files[info.filename] = {"size": n, "md5": digest.hexdigest()}
            name = info.filename
            if md5s is not None and md5s.get(name) != files[name]["md5"]:
                raise RetryableError(f"series {uid}: MD5 mismatch for {name}" if name in md5s else
                                     f"series {uid}: no MD5 listed for {name}")
            try:
                ds = pydicom.dcmread(into / f".{name}", stop_before_pixels=True,
                                     specific_tags=["SeriesInstanceUID", "SOPClassUID"])
            except Exception as exc:
                raise DownloadError(f"series {uid}: ZIP entry {name} is not readable DICOM ({exc}): refused") from exc
            if str(ds.get("SeriesInstanceUID", "")) != uid:
                raise DownloadError(f"series {uid}: {name} belongs to series {ds.get('SeriesInstanceUID')}")
            sop_classes.add(str(ds.get("SOPClassUID", "")))
    for name in files:
        (into / f".{name}").rename(into / name)
    return files, sop_classes


# ----------------------------------------------------------------------------------------------
# manifest and the collection download
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
    if _int(entry.get("image_count")) != _int(meta.get("ImageCount")) or _int(entry.get("file_size")) != _int(meta.get("FileSize")):
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
        "image_count": _int(meta.get("ImageCount")), "file_size": _int(meta.get("FileSize")),
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
