"""A loopback NBIA v4 server for downloader tests, with the failure modes of the real service.

Why a real HTTP server and not a mocked ``requests``: the downloader's hard cases live in the
transport (chunked ZIP streams without Content-Length, connections dropped mid-body, read
timeouts, Retry-After), and only a socket reproduces them. Behaviour follows docs/tcia-api.md §5:
whitelisted parameters (anything else: 400), empty 200 body for no match or limited access, getImage
as a chunked ZIP (``LICENSE``, ``1-01.dcm``..., ``md5hashes.csv`` with ``IncludeMD5=Yes``).

Faults are queued per series and consumed one per getImage request (``server.faults[uid] = [...]``):
``"500"``/``"503"``/``"404"``/``"400"`` status; ``"429"`` with Retry-After; ``"drop"`` connection
closed mid-ZIP; ``"missing"`` a valid ZIP one image short; ``"badmd5"`` a wrong hash in md5hashes.csv;
``"slow"`` a stall longer than the client's read timeout; ``"zipslip"`` an entry named ``../../x``;
``"absolute"`` an entry with an absolute path; ``"json200"`` an error text sent as 200 JSON.
``server.list_faults`` does the same for getSeries.

Hostile modes (a server that never ends an answer; each stops after ``server.hostile_seconds`` or
when the client hangs up, so a test can never hang on it): ``"endless_json"`` (getSeries: a JSON
array that never closes), ``"drip"`` (one byte every ``server.drip_interval`` seconds, with a
Content-Length the body never reaches), ``"drip_headers"`` (the status line, then the headers a byte
at a time), ``"endless_zip"`` (getImage: a ZIP local header, then zeros for ever);
``server.omit_file_size`` leaves FileSize out of getSeries rows, as the endless-ZIP case needs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import socket
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from dicom_fixtures import MR_STORAGE, mr_dataset, save

ALLOWED = {
    "getCollectionValues": {"format"},
    "getSeries": {"Collection", "PatientID", "StudyInstanceUID", "Modality", "BodyPartExamined",
                  "ManufacturerModelName", "Manufacturer", "SeriesInstanceUID", "format"},
    "getImage": {"SeriesInstanceUID", "NewFileNames", "IncludeMD5"},
}
PREFIX = "/nbia-api/services/v4/"
# the repository's copy (byte-identical to the shared one, checked by test_data), so tests run from any clone
MANIFEST = Path(__file__).resolve().parents[1] / "data" / "btp-sample" / "tcia-series-manifest.csv"
LICENSE = ("License Information. The {collection} collection is distributed under the CC BY 3.0 at "
           "http://creativecommons.org/licenses/by/3.0/ By downloading the data, you agree to abide by terms of this license.")


@dataclass
class FakeSeries:
    """One series the server holds: its getSeries row fields and its DICOM files (name -> bytes)."""

    uid: str
    study_uid: str
    patient_id: str
    description: str
    files: dict[str, bytes]
    collection: str = "Brain-Tumor-Progression"
    modality: str = "MR"

    def row(self, file_size: bool = True) -> dict:
        row = {
            "SeriesInstanceUID": self.uid, "StudyInstanceUID": self.study_uid, "Modality": self.modality,
            "ProtocolName": "", "SeriesDate": "08-13-1996", "SeriesDescription": self.description,
            "BodyPartExamined": "BRAIN", "SeriesNumber": 11, "AnnotationsFlag": "", "Collection": self.collection,
            "Site": "MCW", "PatientID": self.patient_id, "PatientSex": "M", "PatientAge": "",
            "Manufacturer": "GE MEDICAL SYSTEMS", "ManufacturerModelName": "SIGNA HDx", "SoftwareVersions": "",
            "ImageCount": len(self.files), "MaxSubmissionTimestamp": "07-20-2018",
            "LicenseName": "Creative Commons Attribution 3.0 Unported License",
            "LicenseURI": "http://creativecommons.org/licenses/by/3.0/",
            "DataDescriptionURI": "https://doi.org/10.7937/K9/TCIA.2018.15quzvnb",
            "FileSize": sum(len(b) for b in self.files.values()), "ReleasedStatus": "Yes",
            "DateReleased": "07-20-2018", "StudyDesc": "MR RCBV SEQUENCE", "StudyDate": "08-13-1996",
            "ThirdPartyAnalysis": "NO", "Authorized": 1,
        }
        if not file_size:
            del row["FileSize"]
        return row


def series_from_manifest(work: Path, n_patients: int = 2, images: int = 3, size: int = 16) -> list[FakeSeries]:
    """Series with the real Brain-Tumor-Progression UIDs, patients, descriptions and SOP classes
    (from the sample's TCIA manifest), each holding ``images`` small 16-bit DICOM files."""
    with open(MANIFEST, newline="") as fh:
        rows = list(csv.DictReader(fh))
    patients = sorted({r["Subject ID"] for r in rows})[:n_patients]
    out = []
    for r in rows:
        if r["Subject ID"] not in patients:
            continue
        files = {}
        for i in range(images):
            img = (np.arange(size * size).reshape(size, size) % 251 + 10 * (i + 1)).astype(np.uint16)
            ds = mr_dataset(img, series_uid=r["Series UID"], patient_id=r["Subject ID"], description=r["Series Description"],
                            position=(0.0, 0.0, 5.0 * i), instance=i + 1, sop_class=r["SOP Class UID"] or MR_STORAGE)
            ds.StudyInstanceUID = r["Study UID"]
            path = save(ds, work / "server-files" / r["Series UID"] / f"{i}.dcm")
            files[f"1-{i + 1:02d}.dcm"] = path.read_bytes()
        out.append(FakeSeries(r["Series UID"], r["Study UID"], r["Subject ID"], r["Series Description"], files))
    return out


@dataclass
class NbiaServer:
    """The server state; ``start()`` serves it on 127.0.0.1 at a random port in a daemon thread."""

    series: list[FakeSeries]
    limited: set[str] = field(default_factory=set)  # collections answered with an empty body
    faults: dict[str, list[str]] = field(default_factory=dict)
    list_faults: list[str] = field(default_factory=list)
    retry_after: str = "1"
    slow_seconds: float = 2.0
    hostile_seconds: float = 30.0
    drip_interval: float = 1.0
    omit_file_size: bool = False
    requests: list[tuple[float, str, dict]] = field(default_factory=list)
    bad_params: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{PREFIX}"

    def image_requests(self, uid: str) -> list[float]:
        return [t for t, ep, q in self.requests if ep == "getImage" and q.get("SeriesInstanceUID") == [uid]]

    def next_fault(self, uid: str | None) -> str | None:
        with self.lock:
            queue = self.list_faults if uid is None else self.faults.get(uid, [])
            return queue.pop(0) if queue else None

    def start(self) -> "NbiaServer":
        state = self

        class Handler(_Handler):
            server_state = state

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """Clients that hang up (read timeouts, the point of the slow fault) are expected, not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: NbiaServer

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain", headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        st = self.server_state
        url = urlparse(self.path)
        endpoint = url.path[len(PREFIX):] if url.path.startswith(PREFIX) else ""
        query = parse_qs(url.query, keep_blank_values=True)
        with st.lock:
            st.requests.append((time.monotonic(), endpoint, query))
        if endpoint not in ALLOWED:
            return self._send(404, b"Not Found")
        unknown = sorted(set(query) - ALLOWED[endpoint])
        if unknown:
            with st.lock:
                st.bad_params.append((endpoint, unknown))
            msg = f"Invalid query parameter: '{unknown[0]}'. Allowed parameters are: {sorted(ALLOWED[endpoint])}"
            return self._send(400, msg.encode())
        one = {k: v[0] for k, v in query.items()}
        if endpoint == "getCollectionValues":
            names = sorted({s.collection for s in st.series} - st.limited)
            return self._send(200, json.dumps([{"Collection": c} for c in names]).encode(), "application/json")
        if endpoint == "getSeries":
            fault = st.next_fault(None)
            if self._status_fault(fault) or self._hostile(fault, b'{"SeriesInstanceUID": "1.2.3", "Modality": "MR"},' * 1300):
                return
            rows = [s.row(not st.omit_file_size) for s in st.series if s.collection not in st.limited and all(
                str(s.row().get(k, "")).upper() == v.upper() for k, v in one.items() if k != "format")]
            return self._send(200, json.dumps(rows).encode() if rows else b"", "application/json")
        uid = one.get("SeriesInstanceUID")
        if not uid:
            return self._send(400, b"A parameter, SeriesInstanceUID, is required for this API call.")
        match = [s for s in st.series if s.uid == uid and s.collection not in st.limited]
        if not match:
            return self._send(400, f"The user has not been granted the access to image with given "
                                   f"SeriesInstanceUID,{uid}. Please contact System Admin".encode(), "application/json")
        fault = st.next_fault(uid)
        if self._status_fault(fault) or self._hostile(fault, b"\0" * 65536):
            return
        self._stream_zip(match[0], fault, one.get("IncludeMD5") == "Yes")

    def _hostile(self, fault: str | None, filler: bytes) -> bool:
        """The never-ending answers; True when ``fault`` was one (the answer is then over)."""
        st = self.server_state
        if fault not in ("endless_json", "drip", "drip_headers", "endless_zip"):
            return False
        end = time.monotonic() + st.hostile_seconds
        self.close_connection = True
        try:
            if fault == "drip_headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for byte in b"Content-Type: application/octet-stream\r\n" * 1000:
                    if time.monotonic() > end:
                        return True
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(st.drip_interval)
                return True
            self.send_response(200)
            if fault == "drip":
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                body = iter(b"PK\x03\x04" + filler)
                while time.monotonic() < end:
                    self.wfile.write(bytes([next(body, 0)]))
                    self.wfile.flush()
                    time.sleep(st.drip_interval)
                return True
            self.send_header("Content-Type", "application/json" if fault == "endless_json" else "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            # a local file header of a stored entry with sizes unknown (data descriptor follows), then zeros
            first = (b"[" if fault == "endless_json" else
                     b"PK\x03\x04" + bytes([20, 0, 8, 0, 0, 0]) + bytes(16) + (8).to_bytes(2, "little") + bytes(2) + b"1-01.dcm")
            for chunk in itertools.chain([first], itertools.repeat(filler)):
                if time.monotonic() > end:
                    return True
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what it should do
        return True

    def _status_fault(self, fault: str | None) -> bool:
        if fault in ("500", "502", "503", "504", "400", "404"):
            self._send(int(fault), b"Server was not able to process your request")
            return True
        if fault == "429":
            self._send(429, b"Too Many Requests", headers={"Retry-After": self.server_state.retry_after})
            return True
        if fault == "json200":
            self._send(200, b"Server was not able to process your request", "application/json")
            return True
        return False

    def _stream_zip(self, s: FakeSeries, fault: str | None, md5: bool) -> None:
        files = dict(s.files)
        if fault == "missing":
            files.pop(sorted(files)[-1])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("LICENSE", LICENSE.format(collection=s.collection))
            if fault == "zipslip":
                zf.writestr("../../x", b"escaped")
            if fault == "absolute":
                zf.writestr("/tmp/mrsr-absolute-x", b"escaped")
            for name, data in files.items():
                zf.writestr(name, data)
            if md5:
                hashes = {n: hashlib.md5(d).hexdigest() for n, d in files.items()}
                if fault == "badmd5":
                    hashes[sorted(hashes)[0]] = "0" * 32
                zf.writestr("md5hashes.csv", "Filename,MD5Hash\n" + "".join(f"{n},{h}\n" for n, h in reversed(hashes.items())))
        body = buf.getvalue()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Disposition", f'attachment; filename="{s.uid}.zip"')
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        step = 1024
        for start in range(0, len(body), step):
            chunk = body[start : start + step]
            if fault == "drop" and start >= len(body) // 2:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk[: len(chunk) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
            if fault == "slow" and start == 0:
                time.sleep(self.server_state.slow_seconds)
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
