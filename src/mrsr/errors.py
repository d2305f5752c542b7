"""Errors the user can fix, and the argparse types that catch bad paths before any work starts.

:func:`mrsr.cli.main` is the one place that turns a :class:`UsageError` into a single line
``error: <message>`` on stderr and exit status 2. Messages start with the file or argument at
fault. Anything else that escapes a command is a bug and keeps its traceback (exit status 1).

The hierarchy: :class:`UsageError`, with :class:`InputFileError` here and, beside the code that
raises them, :class:`mrsr.config.ConfigError`, :class:`mrsr.config.JobError` and
:class:`mrsr.weights.WeightsError` (those three also stay ``ValueError`` for existing callers).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

EXIT_USAGE = 2  # argparse's own status for a bad command line; ours for any other bad input


class UsageError(Exception):
    """Input the user can fix: a bad argument, input file, config, job name or weights file."""


class InputFileError(UsageError):
    """A missing or unreadable input file or folder, or an output path that is a folder."""


def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser that raises :class:`UsageError`.

    argparse then prints the message after the argument's name (``argument --job: ...``) and exits
    2; without the wrapper it would replace the message with "invalid <name> value".

    Args:
        parse: text -> value, raising UsageError for bad text.
    """

    def convert(text: str) -> T:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = parse.__name__
    return convert


def require_file(text: str | os.PathLike) -> Path:
    """``text`` as a Path, checked to be a readable file.

    Raises:
        InputFileError: naming the path and what is wrong with it.
    """
    path = Path(text)
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not a file")
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise InputFileError(f"{path}: not readable (permission denied)")
    return path


def require_dir(text: str | os.PathLike) -> Path:
    """``text`` as a Path, checked to be an existing folder.

    Raises:
        InputFileError: naming the path and what is wrong with it.
    """
    path = Path(text)
    if not path.exists():
        raise InputFileError(f"{path}: no such folder")
    if not path.is_dir():
        raise InputFileError(f"{path}: is a file, not a folder")
    return path


def require_output_file(text: str | os.PathLike) -> Path:
    """``text`` as a Path to write a file to, checked not to be a folder (before any work is done).

    Raises:
        InputFileError: when the path is an existing folder.
    """
    path = Path(text)
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder; give the path of the file to write")
    return path


# argparse types: a bad path stops the command at parsing, naming the argument.
existing_file = arg_type(require_file)
existing_dir = arg_type(require_dir)
output_file = arg_type(require_output_file)
