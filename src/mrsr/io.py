"""Atomic file writes: every artefact is written to a temporary sibling and renamed into place,
so a killed job never leaves a file that a rerun would take as complete.

Temporaries are hidden and named ``.<target name>.mrsr@<host>@<pid>.<random><suffix>.tmp``: the
owner's host and process id in the name let a later run remove the leftovers of a *killed* run
(:func:`clean_stale_temporaries`) without touching those of a run still writing beside it.
Files and folders get the permissions the umask gives (``0666 & ~umask``, ``0777 & ~umask``), as
with a plain ``open``; ``tempfile`` alone would make every output private (0600).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_TAG = re.compile(r"^\..+\.mrsr@(?P<host>[^@/]+)@(?P<pid>\d+)\.[^/]*\.tmp$")
_umask_lock = threading.Lock()


def _owner_tag() -> str:
    return f"mrsr@{socket.gethostname()}@{os.getpid()}."


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), as changing it
    briefly would race with other threads creating files."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere: set a restrictive mask for an instant and put the old one back
        old = os.umask(0o077)
        os.umask(old)
    return old


def staging_path(target: str | os.PathLike, suffix: str = "") -> Path:
    """A new empty hidden temporary file beside ``target`` (named as :func:`clean_stale_temporaries`
    expects), with the permissions the umask gives; the caller renames it into place or removes it.

    Args:
        target: the final file path (its folder is created).
        suffix: suffix for the temporary name (some writers look at the extension, e.g. ``.npy``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_owner_tag()}", suffix=suffix + ".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 whatever the umask
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds.

    Args:
        target: final file path.
        suffix: suffix for the temporary name (some writers look at the extension, e.g. ``.npy``).
        replace: when False, ``target`` is claimed only if nothing is there at the moment of the
            rename (a hard link, which fails on an existing name, then the temporary removed):
            FileExistsError otherwise, even when another process created it meanwhile.
    """
    target = Path(target)
    tmp_path = staging_path(target, suffix)
    try:
        yield tmp_path
        # Again here: some writers (safetensors' save_file) replace the file with a new private (0600) one.
        os.chmod(tmp_path, 0o666 & ~current_umask())
        if replace:
            os.replace(tmp_path, target)
        else:
            claim_file(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def claim_file(tmp: Path, target: Path) -> None:
    """Give ``tmp`` the name ``target`` only if that name is free; FileExistsError if it is taken."""
    try:
        os.link(tmp, target)  # atomic, and never onto an existing name
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
    except OSError:  # a file system without hard links: an exclusive create holds the name instead
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.replace(tmp, target)
    else:
        tmp.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, keep_empty: bool = True, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; it takes ``target``'s place if the block succeeds.

    Args:
        target: final folder path.
        keep_empty: when False, a block that wrote nothing leaves ``target`` as it was.
        replace: when False, FileExistsError if anything is at ``target`` when the folder is renamed
            (a rename onto a folder with files fails, so another process cannot be overwritten).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_owner_tag()}", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700 whatever the umask
    try:
        yield tmp
        if keep_empty or any(tmp.iterdir()):
            _put_dir(tmp, target, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _put_dir(tmp: Path, target: Path, replace: bool) -> None:
    """Rename folder ``tmp`` to ``target``; an existing ``target`` is moved aside first when ``replace``."""
    if not replace:
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target))
        try:
            os.rename(tmp, target)
        except OSError as exc:  # ENOTEMPTY, EEXIST, ENOTDIR: someone claimed the name meanwhile
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from exc
        return
    aside = None
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_owner_tag()}", suffix=".old.tmp", dir=target.parent))
        os.rename(target, aside / "old")
    os.replace(tmp, target)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries (files or folders) that killed runs of mrsr left in ``folder``.

    Only names of our own pattern whose owner was on this host and is no longer running are
    removed: a run writing beside us keeps its temporaries. Not recursive (a temporary folder goes
    with everything in it). Returns what was removed.

    Args:
        folder: where outputs are written (missing: nothing to do).
    """
    folder, removed = Path(folder), []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        match = _TAG.match(entry.name)
        if not match or match["host"] != host or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # gone already, or not ours to remove: never a reason to fail a run
    return removed


def list_files(root: str | os.PathLike, on_error: Callable[[Path, str], None],
               skip_hidden_dirs: bool = False) -> list[Path]:
    """Every file under ``root``, sorted; each folder that cannot be listed is reported, not skipped
    in silence (``Path.rglob`` swallows PermissionError).

    Args:
        root: the folder to search.
        on_error: called as ``on_error(folder, reason)`` for each folder that cannot be listed.
        skip_hidden_dirs: do not descend into folders whose name starts with a dot.
    """
    def report(exc: OSError) -> None:
        on_error(Path(exc.filename or root), f"unreadable folder, its files were not read: "
                                             f"{type(exc).__name__}: {exc.strerror or exc}")

    files = []
    for folder, dirs, names in os.walk(root, onerror=report):
        if skip_hidden_dirs:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(folder) / n for n in names)
    return sorted(p for p in files if p.is_file())


# Files that sit beside images in a dataset folder and are never images: skipped in silence by every
# command that searches a folder for images (ingest, upscale), and never an error.
NON_IMAGE_SUFFIXES = frozenset({".md", ".txt", ".json", ".csv", ".tsv", ".html", ".htm", ".pdf", ".rst",
                                ".yaml", ".yml", ".xml", ".py", ".sh", ".bib", ".cff"})
NON_IMAGE_NAMES = frozenset({"readme", "license", "licence", "copying", "notice", "authors", "changelog",
                             "citation", "manifest", "dicomdir"})


def is_non_image_file(path: str | os.PathLike) -> bool:
    """Whether a file found in a searched folder is documentation or metadata, not an image: a
    suffix of :data:`NON_IMAGE_SUFFIXES`, or a name (any suffix) of :data:`NON_IMAGE_NAMES`."""
    path = Path(path)
    return path.suffix.lower() in NON_IMAGE_SUFFIXES or path.name.split(".")[0].lower() in NON_IMAGE_NAMES


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_json(target: str | os.PathLike, obj: Any) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(target: str | os.PathLike, frame) -> None:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(target, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
