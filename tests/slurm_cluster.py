"""A one-machine SLURM cluster for the tests of the SLURM profile (tests/test_slurm.py).

What it brings up (see /work/shared/notes/environment.md, "SLURM on one machine"):

- munge: the key at /etc/munge/munge.key (created if missing, owned by munge, mode 0400) and
  ``munged -F`` started as the munge user -- unless a munged already answers, which is reused;
- slurm.conf at /etc/slurm/slurm.conf: one node named ``$(hostname -s)`` with
  ``NodeAddr=127.0.0.1``, ``CPUs=$(nproc)``, a partition ``debug``, proctrack/linuxproc,
  task/none, no accounting, select/cons_tres (CR_Core); plus one *pretend* GPU
  (``Gres=gpu:1``, gres.conf ``File=/dev/null``) and at least 64 GB of claimed memory, so that
  a real ``sbatch --gres=gpu:1 --mem 16000`` built from the shipped profile is accepted and
  runs (on the CPU);
- ``slurmctld -D -i`` and ``slurmd -D`` as our own child processes, so they are stopped by PID.

It waits until ``sinfo`` shows the node idle. Rules for sharing the machine:

- The standard path /etc/slurm/slurm.conf is used because the job step inside a job (the
  plugin's ``srun``) drops every ``SLURM_*`` variable, ``SLURM_CONF`` included, so a private
  config path would not reach it. The file is written only if it is absent or carries
  :data:`MARK` (written by this helper before); any other slurm.conf is left alone and the
  tests skip (fail, under CI).
- A controller that already answers is never touched: it is reused if it has a partition
  ``debug`` with an idle node, and it is not stopped afterwards.
- Without the SLURM/munge programs the tests skip with the reason, unless the environment
  variable ``CI`` is set: then they fail (CI installs them with .ci/install-slurm.sh).

Usable as a pytest fixture (:func:`slurm_cluster`, session scope) or by hand:
``python tests/slurm_cluster.py up`` (leaves it running and prints the PIDs) / ``down``.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: First line of every file this helper writes; a file without it is never overwritten.
MARK = "# written by ddm tests/slurm_cluster.py -- safe to delete"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = Path("/etc/slurm/gres.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
PARTITION = "debug"
STATE_DIR = Path("/var/spool/slurmctld-ddmtest")
SPOOL_DIR = Path("/var/spool/slurmd-ddmtest")
LOG_DIR = Path("/var/log/slurm-ddmtest")
PID_FILE = Path("/run/ddm-slurm-test.pids")      # for `python tests/slurm_cluster.py down`
_SBIN = os.pathsep.join(["/usr/sbin", "/sbin", "/usr/local/sbin"])
PROGRAMS = ("slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel",
            "munged", "munge", "unmunge")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be brought up here (missing programs, foreign config, not root...)."""


def which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=_SBIN)


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if which(p) is None]


def _run(cmd: list[str], timeout: float = 15, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _ok(cmd: list[str], timeout: float = 10) -> bool:
    try:
        return _run(cmd, timeout=timeout).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _written_by_us(path: Path) -> bool:
    try:
        return path.read_text().startswith(MARK)
    except OSError:
        return False


def _node_states() -> dict[str, str]:
    """{node: short state} of partition debug, e.g. {"vm": "idle"}; {} if sinfo fails."""
    cmd = [which("sinfo") or "sinfo", "-h", "-p", PARTITION, "-o", "%n %t"]
    try:
        r = _run(cmd, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [line.split() for line in r.stdout.splitlines()]
    return {x[0]: x[1] for x in rows if len(x) == 2} if r.returncode == 0 else {}


def _node_idle(node: str | None = None) -> bool:
    return any(s == "idle" and (node is None or n == node) for n, s in _node_states().items())


def slurm_conf_text(node: str, cpus: int, mem_mb: int) -> str:
    return f"""{MARK}
# One-machine cluster for tests/test_slurm.py. No accounting (sacct does not work: the
# Snakemake SLURM executor must be told `slurm-status-command: squeue`).
ClusterName=ddmtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld-ddmtest.pid
SlurmdPidFile=/run/slurmd-ddmtest.pid
SlurmdSpoolDir={SPOOL_DIR}
StateSaveLocation={STATE_DIR}
SlurmctldLogFile={LOG_DIR}/slurmctld.log
SlurmdLogFile={LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Finished jobs stay visible to `squeue --states=all` this long (the executor's status source).
MinJobAge=300
# Seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit.
KillWait=10
# One pretend GPU (gres.conf: File=/dev/null): lets `sbatch --gres=gpu:1` from the shipped
# profile run here, on the CPU. The node also claims at least 64 GB so that the shipped
# profile's --mem requests fit; memory is not a consumable (CR_Core) nor enforced, and
# config_overrides keeps slurmd from draining a node with less than it claims.
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf_text(node: str) -> str:
    return f"""{MARK}
AutoDetect=off
NodeName={node} Name=gpu File=/dev/null Count=1
"""


@dataclass
class SlurmCluster:
    """A running one-machine cluster; ``procs`` are the daemons we started (empty if reused)."""

    node: str
    partition: str = PARTITION
    reused: bool = False
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path = LOG_DIR

    # -- start ------------------------------------------------------------------------------
    @classmethod
    def start(cls, timeout: float = 60) -> "SlurmCluster":
        missing = missing_programs()
        if missing:
            raise SlurmUnavailable(f"SLURM/munge programs not installed: {', '.join(missing)} "
                                   "(install with .ci/install-slurm.sh)")
        node = socket.gethostname().split(".")[0]
        # An existing controller (ours from an earlier session, or the machine's own).
        if SLURM_CONF.exists() and _ok([which("scontrol"), "ping"]):
            states = _node_states()
            if any(s.rstrip("*") in ("idle", "mix", "alloc", "comp") for s in states.values()):
                return cls(node=node, reused=True)
            raise SlurmUnavailable("a SLURM controller already runs here without a usable node "
                                   f"in partition '{PARTITION}' ({states}); not touching it")
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd/munged needs root")
        for conf in (SLURM_CONF, GRES_CONF):
            if conf.exists() and not _written_by_us(conf):
                raise SlurmUnavailable(f"{conf} exists and was not written by this helper; not "
                                       "overwriting it (remove it, or run the tests elsewhere)")
        self = cls(node=node)
        try:
            self._start_munge()
            self._write_configs()
            self._start_slurm(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_dir / f"{name}.out", "ab")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        out.close()
        self.procs[name] = p
        PID_FILE.write_text("".join(f"{n} {q.pid}\n" for n, q in self.procs.items()))
        return p

    def _munge_works(self) -> bool:
        try:
            cred = _run([which("munge"), "-n"], timeout=5)
            return (cred.returncode == 0 and
                    _run([which("unmunge") or "unmunge"], timeout=5, input=cred.stdout).returncode == 0)
        except (OSError, subprocess.SubprocessError):
            return False

    def _start_munge(self) -> None:
        if self._munge_works():
            return  # someone's munged answers: reuse it, never stop it
        munge = pwd.getpwnam("munge")
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            MUNGE_KEY.write_bytes(os.urandom(1024))
        os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
        os.chmod(MUNGE_KEY, 0o400)
        for d in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, munge.pw_uid, munge.pw_gid)
        p = self._spawn("munged", [which("munged"), "-F"], user=munge.pw_uid, group=munge.pw_gid,
                        extra_groups=[])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise SlurmUnavailable(f"munged exited with {p.returncode}; see {self.log_dir}/munged.out")
            if self._munge_works():
                return
            time.sleep(0.2)
        raise SlurmUnavailable("munged did not answer within 15 s")

    def _write_configs(self) -> None:
        cpus = os.cpu_count() or 1
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal:"))
        mem_mb = max(65536, int(mem_kb / 1024 * 0.9))
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf_text(self.node, cpus, mem_mb))
        GRES_CONF.write_text(gres_conf_text(self.node))
        for d in (STATE_DIR, SPOOL_DIR, LOG_DIR):
            shutil.rmtree(d, ignore_errors=True)   # our own paths: a fresh state every time
            d.mkdir(parents=True)

    def _start_slurm(self, timeout: float) -> None:
        ctld = self._spawn("slurmctld", [which("slurmctld"), "-D", "-i"])
        deadline = time.monotonic() + timeout
        while not _ok([which("scontrol"), "ping"], timeout=5):
            self._check_alive(ctld, "slurmctld", deadline)
            time.sleep(0.3)
        slurmd = self._spawn("slurmd", [which("slurmd"), "-D"])
        while not _node_idle(self.node):
            self._check_alive(slurmd, "slurmd", deadline)
            self._check_alive(ctld, "slurmctld", deadline)
            state = _node_states().get(self.node, "")
            if any(bad in state for bad in ("drain", "inval", "fail")):
                reason = _run([which("sinfo"), "-R"], timeout=10).stdout
                raise SlurmUnavailable(f"node {self.node} is {state}:\n{reason}\n"
                                       f"{self.log_tail('slurmctld')}")
            time.sleep(0.3)

    def _check_alive(self, p: subprocess.Popen, name: str, deadline: float) -> None:
        if p.poll() is not None:
            raise SlurmUnavailable(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
        if time.monotonic() > deadline:
            raise SlurmUnavailable(f"{name} not ready in time:\n{self.log_tail(name)}")

    # -- use ---------------------------------------------------------------------------------
    def log_tail(self, name: str, lines: int = 30) -> str:
        text = ""
        for f in (self.log_dir / f"{name}.log", self.log_dir / f"{name}.out"):
            if f.exists():
                text += f"== {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge): id, name, state, comment."""
        r = _run([which("squeue"), "--states=all", "-h", "-o", "%i|%j|%T|%k"], timeout=15)
        out = []
        for line in r.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 4:
                out.append(dict(zip(("id", "name", "state", "comment"), parts)))
        return out

    def wait_idle(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(j["state"] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")
                       for j in self.jobs()):
                return True
            time.sleep(0.5)
        return False

    # -- stop --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel our cluster's jobs and stop the daemons we started, by PID. A reused cluster
        is left alone."""
        if self.reused:
            return
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            _ok([which("scancel") or "scancel", "--full", "--partition", PARTITION], timeout=10)
            self.wait_idle(timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        PID_FILE.unlink(missing_ok=True)
        remove_configs()


def remove_configs() -> None:
    """Remove the slurm.conf and gres.conf this helper wrote (never another's). Left behind without
    a controller, a slurm.conf makes every `snakemake` on the machine wait about 9 s: the SLURM
    executor plugin asks `scontrol show config` when it is imported, and scontrol retries the
    absent controller before it fails; without the file it fails at once."""
    for conf in (SLURM_CONF, GRES_CONF):
        if _written_by_us(conf):
            try:
                conf.unlink(missing_ok=True)
            except OSError:  # another user's session wrote it (as root): theirs to remove
                pass


def _alive(name: str, pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def remove_stale_configs() -> None:
    """At a test session's start: this helper's configs, when none of the daemons it started (its
    PID file) still runs, as a session that was killed leaves them."""
    try:
        started = [line.split() for line in PID_FILE.read_text().splitlines() if line.strip()]
    except OSError:
        started = []
    if not any(_alive(name, int(pid)) for name, pid in started):
        PID_FILE.unlink(missing_ok=True)
        remove_configs()


def start_or_skip() -> SlurmCluster:
    """Start the cluster; skip the test when SLURM is unavailable, fail under CI."""
    try:
        return SlurmCluster.start()
    except SlurmUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the one-machine SLURM cannot be started: {e}", pytrace=False)
        pytest.skip(f"one-machine SLURM unavailable: {e}")


@pytest.fixture(scope="session")
def slurm_cluster():
    cluster = start_or_skip()
    try:
        yield cluster
    finally:
        cluster.stop()


def _main(argv: list[str]) -> int:
    if argv[1:] == ["up"]:
        c = SlurmCluster.start()
        print(f"node {c.node} idle in partition {c.partition}; "
              + ("reused an existing cluster" if c.reused else
                 " ".join(f"{n}={p.pid}" for n, p in c.procs.items())))
        return 0
    if argv[1:] == ["down"]:
        if not PID_FILE.exists():
            print("no cluster started by this helper")
            return 0
        for line in reversed(PID_FILE.read_text().splitlines()):
            name, pid = line.split()
            try:
                os.kill(int(pid), signal.SIGTERM)
                print(f"stopped {name} ({pid})")
            except ProcessLookupError:
                pass
        PID_FILE.unlink(missing_ok=True)
        return 0
    print("usage: python tests/slurm_cluster.py up|down", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
