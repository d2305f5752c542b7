"""One series' ZIP from NBIA, checked before and while it is extracted: entry names (no paths), sizes
and counts against the series' metadata (:class:`ZipLimits`: zip-bomb and runaway-stream guards),
CRCs, the server's MD5s, and each file's own SeriesInstanceUID."""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrsr.data.tcia.errors import DownloadError, RetryableError

NON_IMAGE_ENTRIES = frozenset({"LICENSE", "md5hashes.csv"})  # entries of a series ZIP that are not images


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
        size, count = as_int(meta.get("FileSize")), as_int(meta.get("ImageCount"))
        if size is not None:
            expected = size
        elif count is not None:
            expected = count * self.max_image_bytes
        else:
            return self.max_series_bytes
        return min(self.max_series_bytes, int(expected * (1 + self.slack_fraction)) + self.slack_bytes)


def as_int(value: Any) -> int | None:
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
            expected = as_int(meta.get("ImageCount"))
            if expected is not None and len(infos) > expected + limits.max_extra_entries:
                raise DownloadError(f"series {uid}: {len(infos)} ZIP entries for {expected} images")
            size = as_int(meta.get("FileSize"))
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
