"""Throwaway database servers for tests, from Debian packages: PostgreSQL (`postgresql`) and
Redis (`redis-server`), each on 127.0.0.1 at a free port with its data in a directory of the
caller's, stopped (and the process reaped) on exit.

PostgreSQL refuses to run as root: as root the cluster is created and run as the `postgres`
system user the package adds (the data directory is handed to it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

INSTALL_HINT = "install it: apt-get update && apt-get install -y postgresql redis-server"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed; {INSTALL_HINT}")
    return found


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A PostgreSQL server; yields its URL (`postgresql://postgres@127.0.0.1:<port>/postgres`,
    trust authentication on loopback only)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    workdir.mkdir(parents=True, exist_ok=True)
    as_user: list[str] = []
    own = workdir
    if os.geteuid() == 0:  # a directory the postgres user can reach (pytest's tmp is 0700)
        import pwd
        import tempfile

        pw = pwd.getpwnam("postgres")
        own = Path(tempfile.mkdtemp(prefix="modelplane-pg-"))
        os.chown(own, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = own / "pgdata", own / "postgres.log"
    port = free_port()
    done = subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        capture_output=True,
    )
    if done.returncode:
        raise RuntimeError(f"initdb failed: {done.stderr.decode()[-2000:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {own} -c fsync=on"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        _wait_port(port, None, "postgres", log)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        if own != workdir:
            with contextlib.suppress(OSError):
                shutil.copy(log, workdir / "postgres.log")
            shutil.rmtree(own, ignore_errors=True)


@contextlib.contextmanager
def redis(workdir: Path) -> Iterator[str]:
    """A redis-server without persistence; yields its URL (`redis://127.0.0.1:<port>/0`)."""
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError(f"redis-server is not installed; {INSTALL_HINT}")
    workdir.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), workdir / "redis.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=out, stderr=out,
        )  # fmt: skip
    try:
        _wait_port(port, proc, "redis-server", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
