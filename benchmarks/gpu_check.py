"""The GPU check: every figure the CPU cannot give, in one time-bounded run.

Run it through ``benchmarks/gpu_check.sh`` (which installs the offline wheels first);
docs/gpu.md says how. It writes ``gpu_check.json`` (rewritten after every part, so a killed run
keeps what it measured) and ``gpu_check.log`` (every command with its output) to ``--out``.

Parts, in order of priority (each bounded by its own budget and by the whole run's ``--budget-s``;
a part that fails or runs out of time is recorded as such and the next one runs):

- ``env``: torch, CUDA, GPU name and clocks.
- ``train_modes``: ``mrsr train`` (the real loop) for two short epochs in each ``train.compile``
  mode, with a checkpoint every epoch: proposed_multi_x2 at the paper's size with cudagraphs (the
  CUDA default), srcnn_x2 with ``on`` and ``off``; that each runs, and where the time goes (the
  history's steps_s/val_s/checkpoint_s, the sidecar's first_step_s = compilation).
- ``bench_on``: ``mrsr benchmark-train`` of all 18 paper jobs with the CUDA fast path (``auto``).
- ``upscale``: ``mrsr upscale --device cuda`` (fp32 and bf16) of a generated 512 x 512 x 24 NIfTI,
  timed end to end.
- ``snakemake``: the paper profile through Snakemake on the embedded sample, epochs and evaluation
  capped, training jobs sharing the card (``--resources gpu_slots=8``).
- ``bench_off``: the 18 jobs again with the fast path off (fp32 eager).
- ``deterministic``: proposed_multi_x2 with ``train.deterministic`` on and off (cuDNN autotuning).
- ``sharing``: four jobs (3 light, 1 heavy: 7 of 8 gpu_slots) at once on the card, against their
  rates alone from ``bench_on``.

``--device cpu --quick`` runs the same parts with tiny models and sizes (tests/test_gpu_check.py);
``--dry-run`` only writes the configs and lists the commands.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"
JOB = "proposed_multi_x2"
# Targets (docs/benchmarks.md, "GPU check").
TARGET_MFU = 0.25  # proposed multi x2, batch 128, of the bf16 datasheet peak
TARGET_PROTOCOL_MIN = 45.0  # all 18 jobs of the paper's protocol on one H100
# Seconds per part at most (the whole run is also capped by --budget-s).
BUDGETS = {"env": 10, "train_modes": 110, "bench_on": 100, "upscale": 35, "snakemake": 110,
           "bench_off": 30, "deterministic": 40, "sharing": 35}
SHARING_JOBS = [("espcn", None, 2), ("fsrcnn", None, 2), ("srcnn", None, 2), ("proposed", "multi", 2)]


@dataclass
class Run:
    """One command's outcome."""

    cmd: list[str]
    rc: int | None
    seconds: float
    timed_out: bool = False
    output: str = ""

    def record(self, tail: int = 1500) -> dict[str, Any]:
        return {"cmd": " ".join(self.cmd), "rc": self.rc, "seconds": round(self.seconds, 3),
                "timed_out": self.timed_out, "output_tail": self.output[-tail:]}


@dataclass
class Check:
    """The run's settings, its deadline, its results and its log."""

    out: Path
    work: Path
    device: str
    quick: bool
    dry_run: bool
    deadline: float
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return sys.executable

    def mrsr(self, *args: str) -> list[str]:
        return [self.python, "-m", "mrsr.cli", *args]

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        with open(self.out / "gpu_check.log", "a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.results, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / "gpu_check.json")

    def env(self) -> dict[str, str]:
        """The environment of every command: the repository's package and an ``mrsr`` shim on PATH."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
        env["PATH"] = os.pathsep.join((str(self.work / "bin"), env.get("PATH", "")))
        env["PYTHONUNBUFFERED"] = "1"
        env["MRSR_NO_DVC_COMMIT"] = "1"  # the Snakemake run must not touch a dvc.lock
        return env

    def run(self, cmd: list[str], timeout: float, cwd: Path | None = None) -> Run:
        """Run ``cmd`` (its whole process group killed after ``timeout`` s); output to the log."""
        self.log(f"\n$ {' '.join(cmd)}  (timeout {timeout:.0f} s)")
        if self.dry_run:
            return Run(cmd, None, 0.0, output="dry run")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd or ROOT, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=max(1.0, timeout))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # snakemake's and torch's children too
            output, _ = proc.communicate()
            timed_out = True
        run = Run(cmd, None if timed_out else proc.returncode, time.monotonic() - t0, timed_out, output or "")
        self.log(run.output)
        self.log(f"# rc {run.rc}, {run.seconds:.1f} s{' (timed out)' if timed_out else ''}")
        return run

    def start(self, cmd: list[str]) -> subprocess.Popen | None:
        """Start ``cmd`` in its own process group (for parts that run several at once)."""
        self.log(f"\n$ {' '.join(cmd)}  (in parallel)")
        if self.dry_run:
            return None
        return subprocess.Popen(cmd, cwd=ROOT, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)


# --- inputs ---------------------------------------------------------------------------------------

def paper_config(check: Check, **train: Any) -> dict[str, Any]:
    """config/paper.yaml, whole (a profile file is a complete config), with ``train`` keys replaced.

    ``--quick`` shrinks the proposed net (8 maps, 2 units) and the batch, for CPU tests.
    """
    config = yaml.safe_load(PAPER.read_text(encoding="utf-8"))
    config["train"].update(device=check.device, **train)
    if check.quick:
        config["model"]["proposed"].update(features=8, units=2)
        config["train"]["batch_size"] = 8
    return config


def write_config(check: Check, name: str, config: dict[str, Any]) -> Path:
    from mrsr.config import validate_config

    validate_config(config)  # a wrong key fails here, not minutes later inside a part
    path = check.work / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def synthetic_patches(check: Check) -> Path:
    """x2 training patches of the paper's size (LR 14, HR 27) and two 256 x 256 validation slices."""
    import numpy as np

    from mrsr.data.resize import downscale

    path = check.work / "x2.npz"
    if path.exists() or check.dry_run:
        return path
    rng = np.random.default_rng(0)
    count, side = (64, 32) if check.quick else (8192, 256)
    hr = rng.random((count, 1, 27, 27), dtype=np.float32)
    lr = rng.random((count, 1, 14, 14), dtype=np.float32)
    slices = {}
    for i in range(2):
        val_hr = rng.random((side, side)).astype(np.float32)
        slices[f"val_hr_{i}"], slices[f"val_lr_{i}"] = val_hr, downscale(val_hr, 2)
    np.savez(path, lr=lr, hr=hr, **slices)
    return path


def mrsr_shim(check: Check) -> None:
    """``mrsr`` on PATH for Snakemake's shell commands: this Python and the repository's package."""
    shim = check.work / "bin" / "mrsr"
    shim.parent.mkdir(parents=True, exist_ok=True)
    shim.write_text(f'#!/bin/sh\nexec "{check.python}" -m mrsr.cli "$@"\n', encoding="utf-8")
    shim.chmod(0o755)


def number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def status_of(*runs: Run) -> str:
    if any(r.rc is None and not r.timed_out for r in runs):
        return "dry-run"
    if any(r.timed_out for r in runs):
        return "timeout"
    return "ok" if all(r.rc == 0 for r in runs) else "failed"


# --- parts ----------------------------------------------------------------------------------------

def part_env(check: Check, budget: float) -> dict[str, Any]:
    code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
            "'cuda': torch.version.cuda, 'cuda_available': c, 'gpu': torch.cuda.get_device_name() if c else None, "
            "'cudnn': torch.backends.cudnn.version() if c else None, 'cpu_count': __import__('os').cpu_count()}))")
    run = check.run([check.python, "-c", code], budget)
    info: dict[str, Any] = {"status": status_of(run), **(json_lines(run.output) or [{}])[0]}
    if shutil.which("nvidia-smi"):
        smi = check.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                         "--format=csv,noheader"], 10)
        info["nvidia_smi"] = smi.output.strip()
    return info


def part_train_modes(check: Check, budget: float) -> dict[str, Any]:
    patches = synthetic_patches(check)
    # The proposed net in the CUDA default (cudagraphs): where its time goes. SRCNN (bicubic input,
    # the graph that once failed to compile) for the other two modes: its compilation takes seconds, not a minute.
    modes = {"cudagraphs": (JOB, 65), "on": ("srcnn_x2", 35), "off": ("srcnn_x2", 20)}
    runs = []
    for mode, (job, share) in modes.items():
        if mode == "cudagraphs" and check.device != "cuda":
            runs.append({"mode": mode, "status": "skipped", "reason": "CUDA graphs need a CUDA device"})
            continue
        if mode == "on" and check.device == "cpu" and check.quick:
            runs.append({"mode": mode, "status": "skipped", "reason": "--quick on a CPU: inductor compiles too long"})
            continue
        steps = 2 if check.quick else 25
        config = paper_config(check, epochs=2, steps_per_epoch=steps, val_slices=2, checkpoint_every_s=0,
                              compile=mode)
        folder = check.work / f"train_{mode}"
        folder.mkdir(exist_ok=True)
        weights = folder / f"{job}.safetensors"
        run = check.run(check.mrsr("train", "--job", job, "--patches", str(patches), "--config",
                                   str(write_config(check, f"train_{mode}.yaml", config)), "--out", str(weights)),
                        min(share * budget / sum(s for _, s in modes.values()), check.remaining()))
        entry: dict[str, Any] = {"mode": mode, "job": job, "status": status_of(run), **run.record()}
        sidecar = weights.with_suffix(".json")
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
            entry.update(fast_path=meta.get("fast_path"), timing=meta.get("timing"))
        history = weights.with_name(f"{job}.history.csv")
        if history.exists():
            with open(history, newline="") as fh:
                entry["history"] = [{k: number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        runs.append(entry)
    done = [r for r in runs if r["status"] != "skipped"]
    return {"status": "ok" if all(r["status"] == "ok" for r in done) else
            ("dry-run" if all(r["status"] == "dry-run" for r in done) else "failed"), "runs": runs}


def bench(check: Check, budget: float, *extra: str) -> tuple[Run, list[dict[str, Any]]]:
    config = write_config(check, "bench.yaml", paper_config(check))
    args = ["benchmark-train", "--config", str(config), "--json", "--keep-going", "--device", check.device]
    if check.quick:
        args += ["--model", "espcn", "--scale", "2", "--steps", "1", "--warmup", "1"]
    run = check.run(check.mrsr(*args, *extra), budget)
    return run, json_lines(run.output)


def part_bench_on(check: Check, budget: float) -> dict[str, Any]:
    run, rows = bench(check, budget, *([] if check.quick else ["--steps", "20", "--warmup", "3"]))
    return {"status": status_of(run), "jobs": rows, **run.record(tail=800)}


def part_bench_off(check: Check, budget: float) -> dict[str, Any]:
    steps = [] if check.quick else ["--steps", "10", "--warmup", "2"]
    run, rows = bench(check, budget, "--amp", "off", "--compile", "off", "--channels-last", "off", *steps)
    return {"status": status_of(run), "jobs": rows, **run.record(tail=800)}


def part_deterministic(check: Check, budget: float) -> dict[str, Any]:
    only = [] if check.quick else ["--model", "proposed", "--strategy", "multi", "--scale", "2", "--steps", "30",
                                   "--warmup", "3"]
    result: dict[str, Any] = {}
    runs = []
    for flag in ("on", "off"):
        run, rows = bench(check, min(budget / 2, check.remaining()), "--deterministic", flag, *only)
        runs.append(run)
        result[f"deterministic_{flag}"] = rows[0] if rows else run.record()
    on, off = (result[f"deterministic_{f}"].get("samples_per_s") for f in ("on", "off"))
    result["cost"] = 1 - on / off if on and off else None  # fraction of throughput deterministic mode loses
    return {"status": status_of(*runs), **result}


def part_sharing(check: Check, budget: float) -> dict[str, Any]:
    """The jobs at once, each timing the same interval (``--not-before``), against their rates alone."""
    from mrsr.config import Job

    alone = {row["job"]: row["samples_per_s"] for row in check.results.get("bench_on", {}).get("jobs", [])
             if "samples_per_s" in row}
    jobs = [Job(*spec) for spec in (SHARING_JOBS[:2] if check.quick else SHARING_JOBS)]
    config = write_config(check, "bench.yaml", paper_config(check))
    start_in = 8.0 if check.quick else min(30.0, budget / 2)  # start-up and (cached) compilation
    not_before = time.time() + start_in
    procs = []
    for job in jobs:
        rate = alone.get(job.name)
        # About 5 s of steps alone (batch 128): long enough to overlap well.
        steps = 2 if check.quick else (max(20, int(5 * rate / 128)) if rate else 200)
        cmd = check.mrsr("benchmark-train", "--config", str(config), "--json", "--device", check.device,
                         "--model", job.model, "--scale", str(job.scale), "--steps", str(steps), "--warmup",
                         "1" if check.quick else "3", "--not-before", f"{not_before:.3f}",
                         *(["--strategy", job.strategy] if job.strategy else []))
        procs.append((job, cmd, check.start(cmd)))
    rows, failures, t0 = [], [], time.monotonic()
    for job, cmd, proc in procs:
        if proc is None:
            continue
        try:
            output, _ = proc.communicate(timeout=max(1.0, budget - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        check.log(output)
        got = [r for r in json_lines(output) if "samples_per_s" in r]
        rows += got
        if proc.returncode != 0 or not got:
            failures.append({"job": job.name, "rc": proc.returncode, "output_tail": output[-800:]})
    result: dict[str, Any] = {"jobs": rows, "failures": failures, "alone_samples_per_s": alone,
                              "commands": [" ".join(c) for _, c, _ in procs]}
    if check.dry_run:
        return {"status": "dry-run", **result}
    if rows:
        begin = min(r["started_at"] for r in rows)
        end = max(r["started_at"] + r["timed_s"] for r in rows)
        result["shared_wall_s"] = end - begin
        result["overlap"] = (min(r["started_at"] + r["timed_s"] for r in rows) - max(r["started_at"] for r in rows)) \
            / (end - begin)
        if all(r["job"] in alone for r in rows):
            # One after another: the same samples at each job's rate alone.
            result["sequential_s"] = sum(r["timed_steps"] * r["batch_size"] / alone[r["job"]] for r in rows)
            result["speedup"] = result["sequential_s"] / result["shared_wall_s"]
    return {"status": "ok" if rows and not failures else "failed", **result}


def nifti_volume(check: Check) -> Path:
    """A 512 x 512 x 24 int16 head-like volume (``--quick``: 64 x 64 x 2)."""
    import nibabel as nib
    import numpy as np

    from mrsr.timing import phantom

    path = check.work / "volume.nii.gz"
    if path.exists() or check.dry_run:
        return path
    side, depth = (64, 2) if check.quick else (512, 24)
    volume = np.stack([phantom(side, seed=k) for k in range(depth)], axis=-1)
    nib.save(nib.Nifti1Image(np.round(volume * 3000).astype(np.int16), np.diag([0.5, 0.5, 1.0, 1.0])), path)
    return path


def part_upscale(check: Check, budget: float) -> dict[str, Any]:
    import torch

    from mrsr.models import build_model
    from mrsr.weights import save_weights

    config = paper_config(check)
    options = config["model"]["proposed"]
    weights = check.work / "upscale" / f"{JOB}.safetensors"
    if not check.dry_run:
        torch.manual_seed(0)  # random weights: the timing does not depend on what was learnt
        save_weights(weights, build_model("proposed", 2, "multi", **options),
                     {"model": "proposed", "scale": 2, "strategy": "multi", "options": options})
    volume = nifti_volume(check)
    runs = {}
    for name, extra in (("fp32", []), ("bf16", ["--bf16"])):
        if name == "bf16" and check.device != "cuda":
            continue
        out = check.work / "upscale" / name
        run = check.run(check.mrsr("upscale", "--model", str(weights), "--device", check.device, "--out", str(out),
                                   *extra, str(volume)), min(budget / 2, check.remaining()))
        written = list(out.glob("*.nii.gz"))
        runs[name] = {"status": status_of(run) if written or check.dry_run else "failed", **run.record(tail=600),
                      "written": [p.name for p in written]}
        if written:
            import nibabel as nib

            runs[name]["output_shape"] = list(nib.load(written[0]).shape)
    statuses = {r["status"] for r in runs.values()}
    return {"status": statuses.pop() if len(statuses) == 1 else "failed", "volume": volume.name, **runs}


def snakemake_profile(check: Check) -> dict[str, Any]:
    """config/paper.yaml, whole, with the budgets capped to seconds (one epoch of 2 steps per job)."""
    config = paper_config(check, epochs=1, steps_per_epoch=2, val_slices=1)
    config["profile"] = "gpu-check"  # its own output folders (models/gpu-check/, benchmarks/gpu-check/, ...)
    config["train"]["device"] = "auto"
    # One training seed (the paper's first): this part checks the pipeline on the card, not the spread.
    seeds = config["train"].pop("seeds", None) or [config["train"].pop("seed", 0)]
    config["train"].pop("seed", None)
    config["train"]["seeds"] = seeds[:1]
    config["evaluate"]["max_test_slices"] = 2
    config["timing"].update(runs=1, warmup=0, slices=1, sizes=["native"], dtypes=["fp32"], bf16_jobs=[],
                            roofline_n=512)
    return config


def part_snakemake(check: Check, budget: float) -> dict[str, Any]:
    copy = check.work / "repo"  # a copy: the run must not overwrite the checkout's models and results
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(ROOT / name, copy / name)
    for name in ("config", "workflow", "profiles", "data/btp-sample"):
        shutil.copytree(ROOT / name, copy / name, symlinks=True)
    profile = write_config(check, "repo/gpu-check.yaml", snakemake_profile(check))
    cores = os.cpu_count() or 2
    # Eight gpu_slots: the card is shared (two heavy jobs, or one heavy and four light, ...). Each
    # training and evaluation job gets 2 threads instead of the whole machine, so several run at once.
    cmd = [check.python, "-m", "snakemake", "all", "--snakefile", "Snakefile", "--configfile", profile.name,
           "--cores", str(cores), "--resources", "gpu_slots=8",
           "--set-threads", "train=2", "evaluate_model=2", "evaluate_bicubic=2"]
    if check.quick:
        cmd.append("-n")  # the DAG and the profile only: a real run takes many CPU minutes
    run = check.run(cmd, budget, cwd=copy)
    result: dict[str, Any] = {"status": status_of(run), **run.record(tail=2500), "profile": profile.name}
    train_seconds = {}
    # benchmarks/gpu-check/train/[by-patient/]seed<k>/<job>.tsv, keyed "seed0/proposed_multi_x2"
    for train_dir in [copy / "benchmarks" / "gpu-check" / "train"]:
        for tsv in sorted(train_dir.rglob("*.tsv")):
            with open(tsv, newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            if rows:
                train_seconds[str(tsv.relative_to(train_dir).with_suffix(""))] = float(rows[0]["s"])
    result["train_job_seconds"] = train_seconds
    return result


def summary(check: Check) -> dict[str, Any]:
    """The targets: proposed x2 MFU, and the 18 jobs' 100-epoch protocol projected on this card."""
    rows = {r["job"]: r for r in check.results.get("bench_on", {}).get("jobs", []) if "mfu" in r}
    out: dict[str, Any] = {"target_mfu": TARGET_MFU, "target_protocol_min": TARGET_PROTOCOL_MIN}
    if JOB in rows:
        out["proposed_multi_x2_mfu"] = rows[JOB]["mfu"]
        out["proposed_multi_x2_samples_per_s"] = rows[JOB]["samples_per_s"]
    if rows:
        steps_min = sum(r["paper_100_epochs_min"] for r in rows.values())
        runs = check.results.get("train_modes", {}).get("runs", [])
        compile_s = next((r["timing"]["first_step_s"] for r in runs if r.get("timing")), None)
        overhead_min = len(rows) * (compile_s or 0) / 60
        out.update(jobs_measured=len(rows), protocol_steps_min=steps_min, compile_s_per_job=compile_s,
                   projected_protocol_min=steps_min + overhead_min)
        speedup = check.results.get("sharing", {}).get("speedup")
        if speedup:
            out["projected_protocol_shared_min"] = (steps_min + overhead_min) / max(1.0, speedup)
    return out


PARTS: dict[str, Callable[[Check, float], dict[str, Any]]] = {
    "env": part_env, "train_modes": part_train_modes, "bench_on": part_bench_on, "upscale": part_upscale,
    "snakemake": part_snakemake, "bench_off": part_bench_off, "deterministic": part_deterministic,
    "sharing": part_sharing,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"),
                        help="folder for gpu_check.json and gpu_check.log (default: $OUT, else ./gpu-check-out)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (CPU tests)")
    parser.add_argument("--dry-run", action="store_true", help="write the configs and list the commands only")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--budget-s", type=float, default=470.0, help="the whole run's seconds at most")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a fresh one under /tmp)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; known: {list(PARTS)}")
    sys.path.insert(0, str(ROOT / "src"))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(__import__("tempfile").mkdtemp(prefix="mrsr-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, work, args.device, args.quick, args.dry_run, time.monotonic() + args.budget_s)
    (args.out / "gpu_check.log").write_text("", encoding="utf-8")
    mrsr_shim(check)
    check.results = {"started": dt.datetime.now().isoformat(timespec="seconds"), "device": args.device,
                     "quick": args.quick, "dry_run": args.dry_run, "budget_s": args.budget_s, "work": str(work),
                     "parts": parts}
    for name in PARTS:
        if name not in parts:
            continue
        budget = min(BUDGETS[name], check.remaining())
        if budget < 5:
            check.results[name] = {"status": "skipped", "reason": "out of time (--budget-s)"}
            check.save()
            continue
        t0 = time.monotonic()
        try:
            check.results[name] = PARTS[name](check, budget)
        except Exception as exc:  # one broken part must not stop the others
            check.results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        check.results[name]["part_seconds"] = round(time.monotonic() - t0, 2)
        print(f"gpu_check: {name}: {check.results[name]['status']} ({check.results[name]['part_seconds']} s)",
              flush=True)
        check.results["summary"] = summary(check)
        check.save()
    statuses = [check.results[p]["status"] for p in parts]
    return 0 if all(s in ("ok", "dry-run", "skipped") for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
