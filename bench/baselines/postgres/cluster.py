"""A throwaway PostgreSQL cluster on loopback, for one benchmark run.

`throwaway_cluster()` installs Debian's postgresql with apt-get when no server is installed,
initdb's a cluster in a fresh temporary directory, starts it on 127.0.0.1 on a free port with
fsync and synchronous_commit on, and, when the `with` block ends for any reason (an exception,
Ctrl-C, SIGTERM turned into SystemExit by the caller), stops it and deletes the directory.
A kill -9 of the benchmark leaves the postmaster running; its directory is named in the log line
printed at start.

PostgreSQL refuses to run as root, so as root every server command runs as the `postgres` user
(created by the Debian package) through runuser; as any other user it runs as that user.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

SERVER_USER = "postgres"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
# Connections the benchmark does not use itself: the loader, the checker, a psql for a human.
SPARE_CONNECTION_COUNT = 5

# Settings that define the measurement; the rest are Debian's defaults. The durability pair is
# the point of the baseline: an acknowledged payment is on disk. The others keep checkpoints,
# JIT and logging from landing inside a 10-second run and blurring the numbers.
DURABLE_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "jit": "off",
    "logging_collector": "off",
}


@dataclasses.dataclass(frozen=True)
class Cluster:
    host: str
    port: int
    user: str
    database: str
    directory: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def _log(message: str) -> None:
    print(f"[postgres baseline] {message}", file=sys.stderr, flush=True)


def _bin_directory() -> Path | None:
    """The newest installed server's bin directory, or None when there is no server."""
    candidates = [Path(path) for path in glob.glob(DEBIAN_BIN_GLOB) if Path(path, "initdb").exists()]
    if not candidates:
        return None
    return max(candidates, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1)


def _install_postgres() -> None:
    _log("no PostgreSQL server found; installing Debian's postgresql with apt-get")
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=environment)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "postgresql"],
                   check=True, env=environment)


def ensure_server() -> Path:
    bin_directory = _bin_directory()
    if bin_directory is None:
        _install_postgres()
        bin_directory = _bin_directory()
    if bin_directory is None:
        raise RuntimeError(f"apt-get installed postgresql, but no initdb matches {DEBIAN_BIN_GLOB}")
    return bin_directory


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *command]
    return command


def _run(command: list[str], cwd: Path) -> None:
    """Run a server command; on failure, show its output (initdb and pg_ctl explain themselves)."""
    result = subprocess.run(_as_server_user(command), cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")


def free_loopback_port() -> int:
    """A port nobody listens on now. Another process could take it before the server does;
    the server then fails to start and says so, which is rare enough not to retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _configuration(port: int, socket_directory: Path, connection_count_max: int) -> str:
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        # Debian's default /var/run/postgresql may not exist (or belong to the system cluster).
        "unix_socket_directories": f"'{socket_directory}'",
        "max_connections": str(connection_count_max + SPARE_CONNECTION_COUNT),
        **DURABLE_SETTINGS,
    }
    lines = ["", "# Written by bench/baselines/postgres/cluster.py for one benchmark run."]
    lines += [f"{name} = {value}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def _make_directory(data_parent: str | None) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="switch-pg-baseline-", dir=data_parent))
    if os.geteuid() == 0:
        server_user = pwd.getpwnam(SERVER_USER)
        os.chown(directory, server_user.pw_uid, server_user.pw_gid)
        # initdb's own message ("Permission denied") does not say which parent is to blame.
        if subprocess.run(_as_server_user(["test", "-w", str(directory)]), cwd="/").returncode != 0:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"the {SERVER_USER} user cannot reach {directory}: choose a --data-parent "
                               "whose parent directories every user may traverse (chmod o+x)")
    return directory


def _stop(bin_directory: Path, data_directory: Path, directory: Path) -> None:
    """Stop quickly; if the server will not stop, stop it the hard way. Never raises."""
    for mode in ("fast", "immediate"):
        try:
            _run([str(bin_directory / "pg_ctl"), "-D", str(data_directory), "-m", mode,
                  "-w", "-t", str(STOP_TIMEOUT_S), "stop"], cwd=directory)
            return
        except RuntimeError as error:
            _log(f"pg_ctl stop -m {mode}: {error}")


def _start(bin_directory: Path, data_directory: Path, directory: Path) -> None:
    log_path = directory / "server.log"
    try:
        _run([str(bin_directory / "pg_ctl"), "-D", str(data_directory), "-l", str(log_path),
              "-w", "-t", str(START_TIMEOUT_S), "start"], cwd=directory)
    except RuntimeError as error:
        # pg_ctl only says "see the log"; the log is deleted with the cluster, so quote it.
        log_tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
        raise RuntimeError(f"{error}\nserver.log:\n{log_tail}") from None


@contextlib.contextmanager
def throwaway_cluster(connection_count_max: int, data_parent: str | None = None) -> Iterator[Cluster]:
    """A running cluster for the `with` block; stopped and deleted afterwards, whatever happens."""
    bin_directory = ensure_server()
    directory = _make_directory(data_parent)
    data_directory = directory / "data"
    started = False
    try:
        # trust: the cluster listens on loopback only and lives for one run; there is no secret
        # worth keeping in it. --no-sync: initdb's files are not what the benchmark measures.
        _run([str(bin_directory / "initdb"), "-D", str(data_directory), "-U", SERVER_USER,
              "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], cwd=directory)
        port = free_loopback_port()
        with open(data_directory / "postgresql.conf", "a") as configuration:
            configuration.write(_configuration(port, directory, connection_count_max))
        _log(f"starting {bin_directory.parent.name} on 127.0.0.1:{port} in {directory}")
        started = True  # from here on, a failed start may still have left a postmaster behind
        _start(bin_directory, data_directory, directory)
        yield Cluster("127.0.0.1", port, SERVER_USER, "postgres", directory)
    finally:
        if started:
            _stop(bin_directory, data_directory, directory)
        shutil.rmtree(directory, ignore_errors=True)
        _log(f"stopped and removed {directory}")
