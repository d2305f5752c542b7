"""The ``mrsr`` command. Each subcommand lives in the module that does the work; this file only
lists them (an explicit table, so a newcomer finds every command's code in one hop)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Each module defines ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-config": ("mrsr.config", "validate a config file against the schema"),
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
    "upscale": ("mrsr.upscale", "super-resolve your own DICOM or NIfTI"),
    "benchmark": ("mrsr.benchmark", "CPU inference time of one model (JSON with the matmul roofline)"),
    "timing": ("mrsr.timing", "Table 3: CPU time of every evaluated method and scale on test slices"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mrsr", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Import only the chosen command's module: `mrsr --help` stays fast, and one broken module
    # cannot take the other commands down.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            adder = getattr(module, f"add_{name.replace('-', '_')}_arguments", None) or module.add_arguments
            adder(p)
            p.set_defaults(func=getattr(module, f"run_{name.replace('-', '_')}", None) or module.run)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
