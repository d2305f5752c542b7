"""The ``mrsr`` command. Each subcommand lives in the module that does the work; this file only
lists them (an explicit table, so a newcomer finds every command's code in one hop) and is the one
place where bad input becomes a one-line message: a :class:`mrsr.errors.UsageError` raised by any
command is printed as ``error: <message>`` and ends the command with exit status 2. Ctrl-C ends any
command with one line and exit status 130: every file is written under a temporary name that is
removed when the interrupt unwinds (:mod:`mrsr.io`), so nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mrsr import __version__
from mrsr.errors import EXIT_USAGE, UsageError

DESCRIPTION = ("Reproducible MR image super-resolution: data, training, evaluation, CPU timing and the HTML report "
               "of the multi-resolution learning CNN, and super-resolution of your own DICOM and NIfTI scans.")
EXIT_INTERRUPTED = 130  # the shell's status for a command ended by SIGINT
EPILOG = ("Exit status: 0 success; 2 bad input or usage (one line names the argument or file at fault); "
          "1 an internal error or a failed run (mrsr train: 3 when the loss became NaN or Inf); "
          "130 interrupted (Ctrl-C), nothing half-written left. "
          "`mrsr COMMAND --help` describes a command.")

# name -> (module, one-line help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``
# (or ``add_<name>_arguments``/``run_<name>`` where one module holds two commands).
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("mrsr.data.check", "validate a config file against the schema and check the dataset it names"),
    "ingest": ("mrsr.data.ingest", "read a data source into a slice store and index"),
    "download": ("mrsr.data.tcia", "download a TCIA collection (NBIA v4), verified and resumable"),
    "split": ("mrsr.data.split", "assign series (or patients) to train/test, seeded"),
    "patches": ("mrsr.data.patches", "make LR/HR training patches for one scale"),
    "train": ("mrsr.train", "train one (model, scale, strategy)"),
    "benchmark-train": ("mrsr.bench_train", "training samples/s and model FLOP utilisation per job"),
    "evaluate": ("mrsr.evaluate", "PSNR/SSIM of one trained model (or bicubic) on the test split"),
    "summarize": ("mrsr.evaluate", "collect per-method metrics into summary.csv"),
    "report": ("mrsr.report", "render the HTML report"),
    "dvc-commit": ("mrsr.dvcsync", "record the workflow's outputs in dvc.lock"),
    "dvc-restore": ("mrsr.dvcsync", "restore DVC-tracked outputs (checkout or --pull) and mark them up to date for Snakemake"),
    "upscale": ("mrsr.upscale", "super-resolve your own DICOM or NIfTI"),
    "models": ("mrsr.zoo.cli", "list, verify and add the networks shipped with mrsr"),
    "benchmark": ("mrsr.benchmark", "CPU inference time of one model (JSON with the matmul roofline)"),
    "timing": ("mrsr.timing", "Table 3: CPU time of every evaluated method and scale on test slices"),
    "reference": ("mrsr.reference", "the CPU reference run of Tables 1-2, committed job by job (docs/reference/cpu)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mrsr`` parser: every command listed, and ``command``'s arguments added.

    Only ``command``'s module is imported: ``mrsr --help`` stays fast, and one broken module cannot
    take the other commands down.

    Args:
        command: the command whose arguments to add (None: none, e.g. for ``mrsr --help``).
    """
    parser = argparse.ArgumentParser(prog="mrsr", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"mrsr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        # description: the one-liner heads `mrsr NAME --help` too (a module may set a longer one).
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == command:
            module = importlib.import_module(module_name)
            suffix = name.replace("-", "_")
            adder = getattr(module, f"add_{suffix}_arguments", None) or module.add_arguments
            adder(p)
            p.set_defaults(func=getattr(module, f"run_{suffix}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``mrsr`` command; returns its exit status.

    Args:
        argv: the arguments after ``mrsr`` (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = build_parser(chosen).parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        # The interrupt has unwound every write in progress (temporaries removed, nothing renamed).
        print(f"mrsr {chosen or ''}: interrupted; nothing half-written was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        # Input the user can fix: one line naming the argument or file, no traceback. Anything
        # else is a bug and keeps its traceback.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
