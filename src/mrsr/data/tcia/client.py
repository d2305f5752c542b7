"""The NBIA v4 client: whitelisted parameters, status handling, retries with backoff, and every answer
bounded in size and time (:class:`Bounds`, on the socket through :mod:`mrsr.data.tcia.deadline`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from mrsr.data.tcia.deadline import CURRENT, DeadlineAdapter, Expiry
from mrsr.data.tcia.errors import DeadlineExceeded, DownloadError, RetryableError

DEFAULT_API_URL = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4/"
USER_AGENT = "mrsr-download/0.1 (MR super-resolution reproduction; python-requests)"
ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "getCollectionValues": frozenset({"format"}),
    "getSeries": frozenset({"Collection", "PatientID", "StudyInstanceUID", "Modality", "BodyPartExamined",
                            "ManufacturerModelName", "Manufacturer", "SeriesInstanceUID", "format"}),
    "getImage": frozenset({"SeriesInstanceUID", "NewFileNames", "IncludeMD5"}),
}
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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
                session.mount(prefix, DeadlineAdapter())
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
    def _exchange(self, endpoint: str, params: dict[str, str]) -> Iterator[tuple[requests.Response, Expiry]]:
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
        expiry = Expiry(seconds)
        CURRENT.expiry = expiry
        try:
            with self._request(endpoint, params) as resp:
                CURRENT.expiry = None
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
            CURRENT.expiry = None

    def _read_body(self, resp: requests.Response, expiry: Expiry, what: str,
                   on_chunk: Callable[[bytes], None]) -> int:
        """Read a body as it arrives, bounded in time; returns the bytes read.

        ``read1`` returns whatever has arrived, so a dripping server hands control back here after
        every drip: the minimum rate and the deadline are checked between reads (the socket
        shutdown of :class:`Expiry` ends a read that blocks).
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
