"""A throw-away PostgreSQL server for tests: PostgreSQL's own binaries (``initdb``, ``pg_ctl``, ``postgres``,
from the ``pgserver`` wheel that ``make test`` installs), a data folder in a fresh temp dir, a free local TCP
port, no system service. PostgreSQL refuses to run as root: under root the server runs as ``nobody`` with a
copy of the binaries in its temp dir (made directly in the system temp folder), since ``nobody`` may not reach
the virtual environment's folder."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bin() -> Path:
    try:
        import pgserver
    except ImportError as e:  # pragma: no cover - make test installs it (dev extra)
        raise RuntimeError("PostgreSQL binaries missing: `pip install -e '.[dev]'` (the pgserver wheel)") from e
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yields its SQLAlchemy URL; stops it (immediate) and deletes its data after."""
    ids: dict = {}
    folder = Path(tempfile.mkdtemp(prefix="codesign-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    data.mkdir()
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        ids = {"user": nobody.pw_uid, "group": nobody.pw_gid}
        os.chown(data, nobody.pw_uid, nobody.pw_gid)
    b = _bin()
    if ids:  # the same layout: PostgreSQL finds lib/ and share/, the wheel's rpath pgserver.libs, relative to bin/
        site = b.parents[2]
        for part in ("pgserver/pginstall/bin", "pgserver/pginstall/lib", "pgserver/pginstall/share", "pgserver.libs"):
            shutil.copytree(site / part, folder / "site" / part, symlinks=True)
        b = folder / "site" / "pgserver" / "pginstall" / "bin"

    def run(*cmd: str | Path) -> None:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120, **ids)
        if r.returncode:
            log = (data / "server.log").read_text()[-2000:] if (data / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {r.stderr[-2000:]}{log}")

    run(b / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    port = _free_port()
    run(b / "pg_ctl", "-D", data, "-l", data / "server.log", "-w", "-t", "60",
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=100", "start")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        try:
            run(b / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
