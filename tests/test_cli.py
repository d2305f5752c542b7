"""The ``mrsr`` command answers bad input with one line naming the argument or file, exit status 2.

Every bad invocation runs through the real entry point (``python -m mrsr.cli``, what the console
script calls) in a subprocess, so an uncaught exception would show as a traceback and exit 1.
Fixtures are tiny and nothing is trained: the weights are a freshly initialised small net. The
subprocesses run side by side (each spends its second or two importing torch).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import mrsr
from mrsr.cli import COMMANDS, DESCRIPTION, build_parser, main
from mrsr.models import build_model
from mrsr.weights import save_weights

# The subprocess imports the same mrsr as this test (a worktree's src/ before an installed copy).
SRC = Path(mrsr.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, default_config) -> Path:
    """A folder with a tiny valid config, x2 proposed weights, an empty store and placeholder inputs."""
    root = tmp_path_factory.mktemp("cli")
    config = dict(default_config, experiments=[{"model": "proposed", "strategy": "multi", "scales": [2]}], scales=[2])
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    options = {"features": 8, "units": 2}
    save_weights(root / "proposed_multi_x2.safetensors", build_model("proposed", 2, "multi", **options),
                 {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
    (root / "store").mkdir()  # a folder, but no index.csv in it
    (root / "a_folder").mkdir()
    (root / "split.csv").write_text("series_key,patient_id,split,norm\n")
    (root / "x2.npz").write_bytes(b"")
    return root


def run_mrsr(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "mrsr.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


COMMON = ["--store", "store", "--split", "split.csv", "--config", "config.yaml"]
WEIGHTS = "proposed_multi_x2.safetensors"

# (id, arguments, fragments the one error line must contain)
# Files of the workspace stand in for the report's inputs (argparse checks they exist, in order).
REPORT_INPUTS = ["--config", "config.yaml", "--per-image", "split.csv", "--split-summary", "split.csv",
                 "--ingest", "split.csv", "--rejected", "split.csv"]
BAD_INVOCATIONS = [
    ("config-is-a-folder", ["check-config", "a_folder"], ["a_folder", "is a folder"]),
    ("config-missing", ["split", "--store", "store", "--config", "nope.yaml", "--out", "s.csv"],
     ["nope.yaml", "does not exist"]),
    ("store-missing", ["split", "--store", "no_store", "--config", "config.yaml", "--out", "s.csv"],
     ["--store", "no_store", "no such folder"]),
    ("store-without-index", ["split", "--store", "store", "--config", "config.yaml", "--out", "s.csv"],
     ["index.csv", "no slice index"]),
    ("patches-scale-not-in-config", ["patches", *COMMON, "--scale", "5", "--out", "p.npz"],
     ["--scale 5", "patches.x5", "x2, x3, x4"]),
    ("train-unknown-model", ["train", "--job", "nosuch_x2", "--patches", "x2.npz", "--config", "config.yaml",
                             "--out", "w.safetensors"], ["--job", "nosuch_x2", "unknown model", "proposed, srcnn"]),
    ("train-scale-not-supported", ["train", "--job", "proposed_multi_x5", "--patches", "x2.npz", "--config",
                                   "config.yaml", "--out", "w.safetensors"], ["--job", "proposed_multi_x5", "2, 3, 4"]),
    ("train-malformed-job", ["train", "--job", "proposed", "--patches", "x2.npz", "--config", "config.yaml",
                             "--out", "w.safetensors"], ["--job", "not a job name", "proposed_multi_x2"]),
    ("train-patches-missing", ["train", "--job", "proposed_multi_x2", "--patches", "x9.npz", "--config",
                               "config.yaml", "--out", "w.safetensors"], ["--patches", "x9.npz", "no such file"]),
    ("train-out-not-safetensors", ["train", "--job", "proposed_multi_x2", "--patches", "x2.npz", "--config",
                                   "config.yaml", "--out", "w.pt"], ["--out", "w.pt", ".safetensors"]),
    ("evaluate-unknown-method", ["evaluate", "--method", "nosuch", "--scale", "2", *COMMON, "--out", "e.csv"],
     ["--method", "nosuch", "bicubic"]),
    ("evaluate-without-weights", ["evaluate", "--method", "proposed", "--scale", "2", *COMMON, "--out", "e.csv"],
     ["--weights", "required", "bicubic"]),
    ("evaluate-weights-of-another-model", ["evaluate", "--method", "srcnn", "--weights", WEIGHTS, "--scale", "2",
                                           *COMMON, "--out", "e.csv"], [WEIGHTS, "'proposed'", "'srcnn'"]),
    ("evaluate-weights-of-another-scale", ["evaluate", "--method", "proposed", "--weights", WEIGHTS, "--scale", "3",
                                           *COMMON, "--out", "e.csv"], [WEIGHTS, "trained for x2, not x3"]),
    ("summarize-csv-missing", ["summarize", "--out", "summary.csv", "missing.csv"], ["missing.csv", "no such file"]),
    ("report-out-is-a-folder", ["report", *REPORT_INPUTS, "--summary", "split.csv", "--out", "a_folder"],
     ["--out", "a_folder", "is a folder"]),
    ("report-results-missing", ["report", *REPORT_INPUTS, "--summary", "summary.csv", "--out", "report.html"],
     ["summary.csv", "no such file"]),
    ("timing-weights-missing", ["timing", *COMMON, "--out", "t.csv", "--machine", "m.json", "gone.safetensors"],
     ["gone.safetensors", "no such file"]),
    ("benchmark-weights-of-another-model", ["benchmark", "--model", "srcnn", "--scale", "2", "--weights", WEIGHTS],
     [WEIGHTS, "'proposed'", "'srcnn'"]),
    ("benchmark-weights-of-another-scale", ["benchmark", "--model", "proposed", "--scale", "3", "--weights", WEIGHTS],
     [WEIGHTS, "trained for x2, not x3"]),
]


@pytest.fixture(scope="module")
def outcomes(workspace) -> dict[str, subprocess.CompletedProcess]:
    """Case id -> the finished ``mrsr`` process of every bad invocation, run concurrently."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {case_id: pool.submit(run_mrsr, args, workspace) for case_id, args, _ in BAD_INVOCATIONS}
        return {case_id: future.result() for case_id, future in futures.items()}


@pytest.mark.parametrize("case_id, fragments", [(case[0], case[2]) for case in BAD_INVOCATIONS],
                         ids=[case[0] for case in BAD_INVOCATIONS])
def test_bad_input_is_one_line_naming_it(outcomes, case_id, fragments):
    result = outcomes[case_id]
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    assert "Traceback" not in text
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def test_bad_input_writes_nothing(outcomes, workspace):
    assert sorted(p.name for p in workspace.iterdir()) == ["a_folder", "config.yaml", "proposed_multi_x2.json",
                                                          WEIGHTS, "split.csv", "store", "x2.npz"]


def test_version(workspace):
    result = run_mrsr(["--version"], workspace)
    assert result.returncode == 0 and result.stdout.strip() == f"mrsr {mrsr.__version__}"


def test_top_level_help_has_a_description_and_every_command(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert stop.value.code == 0
    assert DESCRIPTION in out and "Exit status: 0 success; 2 bad input" in out
    assert all(f"{name} {help_text}" in out for name, (_, help_text) in COMMANDS.items())


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_has_help_for_itself_and_every_argument(command, capsys):
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    assert sub.description
    assert [a.dest for a in sub._actions if not a.help] == []
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mrsr {command}")
