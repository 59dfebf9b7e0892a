"""A one-node SLURM cluster on this machine (munge, slurmctld, slurmd), to try sweeps on and
to test them against: the same `sbatch`/`squeue`/`scontrol` a real cluster answers.

    labrun slurm start [--dir runs/slurm]      # (make slurm)
    labrun slurm stop  [--dir runs/slurm]      # (make slurm-stop)

The node is this machine as `slurmd -C` reports it (cores, memory); `proctrack/linuxproc` and
`task/none` need no cgroups. Where `slurmdbd` and MariaDB are installed (make slurm installs
them) the cluster keeps accounting, as real ones do: `sacct` answers, which is how submitit
tells a job that died (scancel, out of memory) from one still running, and memory requests are
enforced (a job over its `mem_gb` is killed). Its `slurm.conf`, state, spool, logs and pid
files live in the folder; `/etc/slurm/slurm.conf` links to it (where none of another cluster
is there), so `sbatch` and submitit find it with no `SLURM_CONF` to export. Needs root (munged
runs as the munge user, slurmd as root), as a cluster's own daemons do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from labrun.errors import LabrunError

SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
MUNGE_KEY = Path("/etc/munge/munge.key")
MARK = "# written by labrun slurm start"
NEEDED = ("slurmctld", "slurmd", "sinfo", "sbatch", "munged")
ACCOUNTING = ("slurmdbd", "mariadbd", "mariadb-install-db", "sacctmgr")
DB_PORT, DBD_PORT = 3307, 6819


class ClusterError(LabrunError):
    """The cluster cannot be started here: what is missing and how to get it."""


def check_installable() -> None:
    """The programs and rights a cluster needs, or one line saying what to install or do."""
    missing = [p for p in NEEDED if not installed(p)]
    if missing:
        raise ClusterError(
            f"SLURM is not installed here ({', '.join(missing)} missing); install it "
            "(Debian/Ubuntu: apt-get install slurm-wlm munge), or run make slurm as root"
        )
    if os.geteuid() != 0:
        raise ClusterError("a SLURM cluster's daemons run as root: run make slurm as root")


def installed(program: str) -> bool:
    return bool(shutil.which(program)) or Path("/usr/sbin", program).exists()


def conf_text(folder: Path, accounting: bool = False) -> str:
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    node_line = node.stdout.splitlines()[0]  # NodeName=<host> CPUs=... RealMemory=...
    host = node_line.split()[0].removeprefix("NodeName=")
    f = folder.resolve()
    return f"""{MARK} ({f})
ClusterName=labrun
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool
SlurmctldLogFile={f}/slurmctld.log
SlurmdLogFile={f}/slurmd.log
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters={"CR_Core_Memory" if accounting else "CR_Core"}
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
{ACCOUNTING_LINES if accounting else "JobAcctGatherType=jobacct_gather/none"}
JobRequeue=1
MinJobAge=600
KillWait=30
{node_line}
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


ACCOUNTING_LINES = f"""JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={DBD_PORT}"""


def dbd_text(folder: Path) -> str:
    f = folder.resolve()
    return f"""{MARK}
AuthType=auth/munge
DbdHost=localhost
DbdPort={DBD_PORT}
SlurmUser=root
PidFile={f}/slurmdbd.pid
LogFile={f}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={DB_PORT}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""


def start_accounting(folder: Path) -> bool:
    """MariaDB (data in `folder/db`, on 127.0.0.1:3307) and slurmdbd, when both are installed;
    returns whether accounting is up."""
    if not all(installed(p) for p in ACCOUNTING):
        return False
    f = folder.resolve()
    sock = f / "mysql.sock"
    if not (f / "db" / "mysql").is_dir():
        subprocess.run(
            ["mariadb-install-db", f"--datadir={f}/db", "--user=root"],
            check=True,
            capture_output=True,
        )
    if not alive(f / "mysql.pid"):
        subprocess.Popen(
            [
                "mariadbd",
                f"--datadir={f}/db",
                f"--socket={sock}",
                f"--port={DB_PORT}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={f}/mysql.pid",
                f"--log-error={f}/mysql.err",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _until(lambda: sock.exists() and alive(f / "mysql.pid") is not None, 30, "MariaDB")
        grants = " ".join(
            f"CREATE USER IF NOT EXISTS 'slurm'@'{h}' IDENTIFIED BY 'slurm'; "
            f"GRANT ALL ON slurm_acct_db.* TO 'slurm'@'{h}';"
            for h in ("localhost", "127.0.0.1")
        )
        subprocess.run(["mariadb", f"--socket={sock}", "-u", "root", "-e", grants], check=True)
    dbd = f / "slurmdbd.conf"
    dbd.write_text(dbd_text(folder))
    dbd.chmod(0o600)
    if not alive(f / "slurmdbd.pid"):  # slurmdbd reads slurmdbd.conf beside SLURM_CONF
        env = {**os.environ, "SLURM_CONF": str(f / "slurm.conf")}
        _daemon(["slurmdbd"], f / "slurmdbd.log", env)
        _until(lambda: _port_open(DBD_PORT), 30, "slurmdbd")
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _until(ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} did not start in {timeout_s:.0f} s")
        time.sleep(0.3)


def start(folder: Path, timeout_s: float = 60.0) -> str:
    """Start (or find running) the cluster of `folder`; returns the node's state line."""
    check_installable()
    folder = folder.resolve()  # the daemons run from /
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(conf_text(folder))
    link_system_conf(conf)
    start_munge()
    if start_accounting(folder):
        conf.write_text(conf_text(folder, accounting=True))
        subprocess.run(  # once per store; "already exists" afterwards
            ["sacctmgr", "-i", "add", "cluster", "labrun"], capture_output=True, timeout=30
        )
    if not alive(folder / "slurmctld.pid"):
        _daemon(["slurmctld", "-f", str(conf)], folder / "slurmctld.log")
    if not alive(folder / "slurmd.pid"):
        _daemon(["slurmd", "-f", str(conf)], folder / "slurmd.log")
    return wait_idle(conf, timeout_s)


def stop(folder: Path) -> list[str]:
    """Stop the daemons of `folder` by their pid files; returns what was stopped."""
    stopped = []
    for name in ("slurmd", "slurmctld", "slurmdbd", "mysql"):
        pid_file = folder / f"{name}.pid"
        if pid := alive(pid_file):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not alive(pid_file):
                    break
                time.sleep(0.1)
            stopped.append(name)
    return stopped


def alive(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process is running."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def link_system_conf(conf: Path) -> None:
    """`/etc/slurm/slurm.conf` -> this folder's, unless it belongs to another cluster: one
    not made by labrun, or a labrun cluster of another folder that is running (both use
    SLURM's ports, and repointing the link would send that cluster's commands here)."""
    if SYSTEM_CONF.is_symlink():
        other = SYSTEM_CONF.resolve().parent
        if other != conf.resolve().parent and alive(other / "slurmctld.pid"):
            raise ClusterError(
                f"the SLURM cluster of {other} is running; stop it first "
                f"(labrun slurm stop --dir {other})"
            )
    if SYSTEM_CONF.is_symlink() or not SYSTEM_CONF.exists():
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.unlink(missing_ok=True)
        SYSTEM_CONF.symlink_to(conf.resolve())
    elif MARK not in SYSTEM_CONF.read_text():
        raise ClusterError(
            f"{SYSTEM_CONF} belongs to another cluster; stop it or export "
            f"SLURM_CONF={conf.resolve()} before starting this one"
        )


def start_munge() -> None:
    """munged as the munge user, with a key (made if the package left none)."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return  # running and answering
    if not MUNGE_KEY.exists():
        subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)


def _daemon(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ClusterError(f"{command[0]} did not start ({tail[0]}); see {log}")


def wait_idle(conf: Path, timeout_s: float) -> str:
    """Until `sinfo` shows the node idle (a node left down by an earlier run is resumed)."""
    env = {**os.environ, "SLURM_CONF": str(conf)}
    host = socket.gethostname().split(".")[0]
    deadline = time.monotonic() + timeout_s
    state = "no answer"
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T %c %m"], capture_output=True, text=True, env=env
        )
        state = out.stdout.strip() or out.stderr.strip() or state
        if out.returncode == 0 and any(s in state for s in ("idle", "mixed", "allocated")):
            return state
        if out.returncode == 0 and ("down" in state or "drain" in state):
            subprocess.run(
                ["scontrol", "update", f"nodename={host}", "state=resume"],
                capture_output=True,
                env=env,
            )
        time.sleep(0.5)
    raise ClusterError(f"the SLURM node did not become idle in {timeout_s:.0f} s ({state})")


def start_pending_requeues() -> list[str]:
    """Start now every job that waits for the begin time SLURM gives a requeued job (about two
    minutes, so that a real cluster's node can settle); on one node nothing needs to settle.
    The ids started."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %r"], capture_output=True, text=True).stdout
    started = []
    for line in out.splitlines():
        job, _, reason = line.partition(" ")
        if reason.strip() == "BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=False)
            started.append(job)
    return started
