"""All-or-nothing updates of the zoo folder: several files replaced as one change.

A change is staged as hidden temporaries beside their targets; then one journal file naming every
(temporary, target) pair is renamed into place, which is the commit point; then the temporaries
are renamed onto their targets and the journal removed. Whatever interrupts it (Ctrl-C, a kill, a
power cut), the next reader finds either no journal (the zoo as before: the temporaries belong to a
dead process and are removed as such) or a journal, which it carries out (the zoo fully updated).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mrsr.io import staging_path, write_json

JOURNAL = ".commit.json"


def recover(folder: Path) -> None:
    """Finish a change whose journal was committed but whose renames were cut short (idempotent).

    Args:
        folder: the zoo folder.

    Raises:
        OSError: the folder cannot be written (a read-only install with an unfinished change).
    """
    journal = folder / JOURNAL
    if not journal.exists():
        return
    for tmp, final in json.loads(journal.read_text(encoding="utf-8")):
        source, target = folder / tmp, folder / final
        if source.exists():
            os.replace(source, target)
    journal.unlink()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the renames run (a few microseconds), so an interactive stop
    never needs recovery; a kill still can, and :func:`recover` covers it."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Change:
    """Files staged for one zoo change; :meth:`commit` puts them all in place at once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.staged: list[tuple[Path, str]] = []
        self.committed = False

    def stage(self, name: str, suffix: str = "") -> Path:
        """A temporary beside ``folder/name`` to write the new content to (``name``: a file name only)."""
        if Path(name).name != name or name.startswith("."):
            raise ValueError(f"{name!r}: not a file name inside the zoo folder")
        tmp = staging_path(self.folder / name, suffix)
        self.staged.append((tmp, name))
        return tmp

    def commit(self) -> None:
        """Write the journal (the commit point), rename every staged file onto its target, drop the journal."""
        write_json(self.folder / JOURNAL, [[tmp.name, name] for tmp, name in self.staged])
        self.committed = True  # from here on the temporaries belong to the journal: never discarded
        with _signals_deferred():
            recover(self.folder)

    def discard(self) -> None:
        """Remove the staged temporaries of a change whose journal was never written."""
        if self.committed:
            return
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        self.staged = []
