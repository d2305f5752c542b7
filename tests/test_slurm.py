"""The workflow on a real one-node SLURM cluster through workflow/profiles/slurm.

The fixture starts munged, slurmctld and slurmd (Debian's slurm-wlm and munge; no systemd) on
localhost with everything under a temporary folder: its own munge key and socket, free ports, two
partitions (`testcpu`, `testgpu`) on the one node, and a fake GPU (`Gres=gpu:1`, gres.conf
`File=/dev/null`). No accounting: job status comes from squeue, and MinJobAge keeps finished jobs
visible to squeue and `scontrol show job` for 10 minutes. The daemons run in the foreground as
children of pytest with a parent-death signal, and teardown stops them (and any job process they
left) by pid, pass or fail.

The test runs the tiny configuration (one seed, no split-by-patient check: every rule once, half the
jobs) once locally and once through the slurm profile (its partitions renamed to the test cluster's), then checks from `scontrol show job` that every training
job went to the GPU partition with one GPU and everything else to the CPU partition without one,
and that per-image metrics, training history and weights equal the local run's exactly.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file

from workflow_fixtures import SNAKEMAKE, copy_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel")
CPU_PARTITION, GPU_PARTITION = "testcpu", "testgpu"
MIN_JOB_AGE = 600  # seconds finished jobs stay visible to squeue / scontrol (the profile needs >= 120)
MARKER = "MRSR_SLURM_TEST"  # in the environment of every process the cluster fixture starts


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


def _skip_reason() -> str | None:
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "needs Linux"
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        return (f"SLURM/munge binaries missing: {', '.join(missing)} "
                "(install Debian's slurm-wlm and munge: bash scripts/setup.sh test)")
    if os.geteuid() != 0:
        return "the one-node SLURM test starts slurmd/slurmctld as root; run it as root (CI does)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(sig: int = signal.SIGTERM, new_session: bool = True):
    """A preexec_fn: the child gets ``sig`` when pytest dies (PR_SET_PDEATHSIG), even by SIGKILL."""

    def preexec() -> None:
        if new_session:
            os.setsid()
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)

    return preexec


def _node_line() -> str:
    """This machine's real hardware as slurmd sees it (CPUs, sockets, cores, threads, RealMemory)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next(l for l in out.splitlines() if l.startswith("NodeName="))
    fields = [f for f in line.split()[1:] if f.split("=")[0] in
              {"CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"}]
    return " ".join(fields)


def _marked_pids(marker_value: str) -> list[int]:
    """Processes whose environment carries this fixture's marker (daemons, job steps, job commands)."""
    needle = f"{MARKER}={marker_value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


# Started with the cluster and told by the kernel when pytest dies (even by SIGKILL): it kills what
# the daemons' parent-death signal does not reach (slurmstepd and the processes of running jobs).
WATCHDOG = r"""
import os, shutil, signal, sys
marker, base = sys.argv[1].encode(), sys.argv[2]

def reap(*_):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if int(pid) != os.getpid() and marker in fh.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(base, ignore_errors=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, reap)
while True:
    signal.pause()
"""


class Cluster:
    def __init__(self, base: Path):
        self.base = base
        self.conf = base / "slurm.conf"
        self.bin = base / "bin"
        self.logs = base / "log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), MARKER: str(base)}

    # -- setup -------------------------------------------------------------------------------
    def write_config(self) -> None:
        for d in ("munge", "state", "spool", "log", "bin"):
            (self.base / d).mkdir(mode=0o700)
        key = self.base / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        b = self.base
        self.conf.write_text(f"""# one-node test cluster written by tests/test_slurm.py
ClusterName=mrsrtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={b}/munge/munge.socket
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 {_node_line()} Gres=gpu:1 State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes=localhost MaxTime=INFINITE State=UP
""")
        (self.base / "gres.conf").write_text("Name=gpu File=/dev/null\n")
        # The plugin's job step runs `srun` with every SLURM_* variable removed, SLURM_CONF too; a
        # real cluster has /etc/slurm/slurm.conf, this one only SLURM_CONF. Restore it for srun.
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        srun.chmod(0o755)

    def start(self, name: str, args: list[str]) -> None:
        out = open(self.logs / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen([_which(name), *args], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.base,
                                            preexec_fn=_die_with_parent())

    def client(self, *args: str, timeout: int = 30) -> subprocess.CompletedProcess:
        return subprocess.run([_which(args[0]), *args[1:]], capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def up(self) -> None:
        b = self.base
        self.procs["watchdog"] = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, f"{MARKER}={b}", str(b)], stdin=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != MARKER}, preexec_fn=_die_with_parent())
        self.start("munged", ["-F", "--force", f"--key-file={b}/munge/munge.key", f"--socket={b}/munge/munge.socket",
                              f"--pid-file={b}/munge/munged.pid", f"--seed-file={b}/munge/seed",
                              f"--log-file={b}/log/munged.log"])
        self._wait(lambda: (b / "munge" / "munge.socket").exists(), "munged socket")
        self.start("slurmctld", ["-D", "-f", str(self.conf)])
        self.start("slurmd", ["-D", "-f", str(self.conf), "-N", "localhost"])

        def node_idle() -> bool:
            r = self.client("sinfo", "-h", "-N", "-o", "%T", timeout=10)
            return r.returncode == 0 and r.stdout.split() and all(s == "idle" for s in r.stdout.split())

        self._wait(node_idle, "the node to be idle", timeout=90)

    def _wait(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None and n != "watchdog"]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}:\n{self.log_tails()}")
            try:
                if ready():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for path in sorted(self.logs.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    # -- teardown ------------------------------------------------------------------------------
    def down(self) -> None:
        try:
            if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
                self.client("scancel", "--user", "root", timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for name in ("slurmd", "slurmctld", "munged", "watchdog"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        # slurmstepd and job processes are not our children: find them by the marker.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _marked_pids(str(self.base))
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if pids and sig == signal.SIGTERM:
                time.sleep(2)
        for proc in self.procs.values():
            if proc.stdout:
                proc.stdout.close()

    # -- queries -------------------------------------------------------------------------------
    def jobs(self, name: str) -> list[dict[str, str]]:
        """`scontrol -d show job -o` of every job called ``name`` (the plugin's run ID), as dicts."""
        r = self.client("scontrol", "-d", "show", "job", "-o")
        assert r.returncode == 0, r.stderr
        jobs = []
        for line in r.stdout.splitlines():
            fields = dict(re.findall(r"(\S+?)=(\S*)", line))
            if fields.get("JobName") == name:
                jobs.append(fields)
        return jobs


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _skip_reason()
    if reason:
        # CI must prove the cluster path, not skip it: .ci/run sets MRSR_REQUIRE_SLURM=1.
        if os.environ.get("MRSR_REQUIRE_SLURM") == "1":
            pytest.fail(f"MRSR_REQUIRE_SLURM=1 but the SLURM test cannot run: {reason}")
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="mrsr-slurm-"))  # short: the munge socket path has a length limit
    cluster = Cluster(base)
    try:
        cluster.write_config()
        cluster.up()
        yield cluster
    finally:
        cluster.down()
        leftovers = _marked_pids(str(base))
        shutil.rmtree(base, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster survived teardown: {leftovers}"


def slurm_test_profile(root: Path, dest: Path, cores: int) -> dict:
    """Our profile with the test cluster's partitions and faster status checks for seconds-long jobs."""
    profile = yaml.safe_load((root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    cpu = profile["default-resources"]["slurm_partition"]
    gpu = profile["set-resources"]["train"]["slurm_partition"]
    assert cpu != gpu, "training must go to its own (GPU) partition"
    profile["default-resources"]["slurm_partition"] = CPU_PARTITION
    profile["set-resources"]["train"]["slurm_partition"] = GPU_PARTITION
    profile["default-resources"]["slurm_account"] = "''"  # no accounting here: no account to give
    profile.update({
        "cores": cores,  # threads per multi-threaded job: the same as the local run's --cores
        "retries": 0,
        "latency-wait": 10,
        "slurm-init-seconds-before-status-checks": 1,
        "slurm-keep-successful-logs": True,
    })
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def _per_image_frames(work: Path) -> dict[str, pd.DataFrame]:
    """Per-image metrics and training histories without their wall-clock columns."""
    frames = {}
    # tiny_config's profile "test": every run's files, in their sub-folders
    files = sorted((work / "results/test/metrics/per_image").rglob("*.csv")) + sorted((work / "models/test").rglob("*.history.csv"))
    for path in files + [work / "results/test/metrics/summary.csv"]:
        df = pd.read_csv(path, keep_default_na=False)
        # wall-clock columns: seconds, and the histories' steps_s, val_s, checkpoint_s, samples_per_s
        frames[str(path.relative_to(work))] = df.drop(columns=[c for c in df.columns if "second" in c or c.endswith("_s")])
    return frames


def test_workflow_on_one_node_slurm_equals_local_run(root, tmp_path, tiny_config, slurm_cluster):
    cores = 2
    # Every rule once: each job through SLURM costs a Snakemake start-up and a few status checks.
    tiny_config["train"]["seeds"] = [0]
    tiny_config["leakage"] = None
    local, remote = tmp_path / "local", tmp_path / "slurm"
    copy_workflow(root, local, tiny_config)
    copy_workflow(root, remote, tiny_config)
    profile = slurm_test_profile(root, tmp_path / "profile", cores)
    exclusive = {rule for rule, res in profile["set-resources"].items() if "--exclusive" in str(res.get("slurm_extra"))}
    # Both runs import mrsr from one snapshot of src/ (the installed package is an editable install
    # of the working tree, which may change while the runs are under way).
    env = {**slurm_cluster.env, "MRSR_NO_DVC_COMMIT": "1", "PYTHONPATH": str(local / "src"),
           "PATH": os.pathsep.join([str(slurm_cluster.bin), str(Path(sys.executable).parent), os.environ["PATH"]])}
    local_env = {k: v for k, v in env.items() if k not in ("SLURM_CONF", MARKER)}

    # The cluster run mostly waits for status checks: run the local one meanwhile.
    log_path = tmp_path / "slurm-run.log"
    with open(log_path, "w") as log:
        # SIGKILL if pytest dies: a Snakemake that lost its cluster ignores SIGTERM.
        cluster_run = subprocess.Popen([*SNAKEMAKE, "--profile", str(tmp_path / "profile"), "all"], cwd=remote,
                                       env=env, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent(signal.SIGKILL, new_session=False))
        try:
            local_run = subprocess.run([*SNAKEMAKE, "--cores", str(cores), "all"], cwd=local, env=local_env,
                                       capture_output=True, text=True, timeout=600,
                                       preexec_fn=_die_with_parent(signal.SIGKILL, new_session=False))
            assert local_run.returncode == 0, local_run.stderr[-3000:]
            cluster_run.wait(timeout=720)
        finally:
            if cluster_run.poll() is None:
                cluster_run.kill()
                cluster_run.wait()
    text = log_path.read_text(errors="replace")
    hint = ""
    if "Falling back to 'sacct'" in text:
        hint = ("\nThe plugin fell back to sacct (it could not read MinJobAge from `scontrol show config`); "
                "without accounting its status checks then lose the jobs.")
    if cluster_run.returncode != 0:
        failed = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                           for p in sorted((remote / ".snakemake/slurm_logs").rglob("*.log")))
        pytest.fail(f"snakemake --profile slurm exited {cluster_run.returncode}:{hint}\n{text[-4000:]}\n"
                    f"{failed[-6000:]}\n{slurm_cluster.log_tails()}")

    # (a) What SLURM ran: every job of the run, with partition and GPU request, from scontrol.
    run_id = re.search(r"SLURM run ID: (\S+)", text).group(1)
    jobs = slurm_cluster.jobs(run_id)
    rules = {}
    for job in jobs:
        rule = re.fullmatch(r"rule_(.+?)(?:_wildcards_.*)?", job["Comment"]).group(1)
        rules.setdefault(rule, []).append(job)
        assert job["JobState"] == "COMPLETED", job
        # TresPerJob: what sbatch asked for (--gpus=1: "gres:gpu:1", "gres/gpu:1" in SLURM >= 23);
        # JOB_GRES (scontrol -d): what the job was given.
        requested = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        gpus = re.findall(r"gres[:/]gpu[:=](\d+)", requested)
        allocated = re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", job.get("JOB_GRES", ""))
        if rule == "train":
            assert job["Partition"] == GPU_PARTITION, job
            assert gpus == ["1"] and allocated == ["1"], f"training job without exactly one GPU: {job}"
        else:
            assert job["Partition"] == CPU_PARTITION, job
            assert not gpus, f"{rule} job asked for a GPU: {job}"
            # An --exclusive job is given the whole node, this one's fake GPU included.
            assert rule in exclusive or not allocated, f"{rule} job was given a GPU: {job}"
        if rule in exclusive:  # timing: alone on its node
            assert job["OverSubscribe"] == "NO", job
    expected = set(re.findall(r"^rule (\w+):", subprocess.run(
        [*SNAKEMAKE, "-n", "--forceall", "--cores", "1", "all"], cwd=local, env=local_env,
        capture_output=True, text=True, timeout=300).stdout, flags=re.M)) - {"all"}
    assert set(rules) == expected, f"submitted rules {sorted(rules)}, the DAG has {sorted(expected)}"
    assert len(rules["train"]) == len(list((local / "models/test").rglob("*.safetensors")))

    # (b) The same results as the local run: metrics, histories and weights, exactly.
    ours, theirs = _per_image_frames(remote), _per_image_frames(local)
    assert ours.keys() == theirs.keys()
    for name, frame in ours.items():
        pd.testing.assert_frame_equal(frame, theirs[name], check_exact=True, obj=name)
    weights = sorted(str(p.relative_to(local)) for p in (local / "models/test").rglob("*.safetensors"))
    assert weights and weights == sorted(str(p.relative_to(remote)) for p in (remote / "models/test").rglob("*.safetensors"))
    for name in weights:
        a, b = load_file(local / name), load_file(remote / name)
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), f"{name}: {key} differs from the local run"
    assert (remote / "reports/test/report.html").is_file()
