"""A throw-away PostgreSQL server for tests: Debian's binaries, a temporary data directory, a free port.

:class:`PostgresServer` runs ``initdb`` (trust authentication, superuser ``robustvit``) and
``pg_ctl start`` listening on 127.0.0.1 at a free port and on a unix socket in its own temporary
directory; :meth:`PostgresServer.create_database` gives each test a fresh database. ``initdb``
refuses to run as root, so as root the server runs as an unprivileged OS user (Debian's
``postgres``, else a ``robustvit-pg`` user made with ``useradd``) through ``runuser`` (or ``su``).

Without the binaries the tests skip with the install command, except when ``$CI`` is set: there
they fail, since CI must have them (``apt-get install postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "install PostgreSQL's server binaries (Debian/Ubuntu: apt-get install postgresql) and psycopg " \
               "(pip install 'psycopg[binary]>=3.1')"
SUPERUSER = "robustvit"
FALLBACK_OS_USER = "robustvit-pg"


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest ``/usr/lib/postgresql/*/bin``."""
    initdb = shutil.which("initdb")
    if initdb:
        folder = Path(initdb).resolve().parent
        if (folder / "pg_ctl").exists():
            return folder
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in Path(p).parent.name.split(".")
                                                                            if x.isdigit()])
    for folder in reversed(versions):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _os_user() -> str | None:
    """None when not root; else an unprivileged user to run the server as (created if need be)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
                   check=True, capture_output=True)
    return FALLBACK_OS_USER


class PostgresServer:
    """One PostgreSQL server in a temporary directory; :meth:`stop` removes it.

    Args:
        bin_dir: The folder of ``initdb`` and ``pg_ctl`` (:func:`find_binaries`).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = _os_user()
        self.root = Path(tempfile.mkdtemp(prefix="robustvit-pg-"))  # in /tmp: reachable by the server's user
        self.data = self.root / "data"
        self.port = 0
        self.seconds = 0.0
        self._databases = 0
        if self.user is not None:
            shutil.chown(self.root, self.user)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            runuser = shutil.which("runuser")
            cmd = [runuser, "-u", self.user, "--", *cmd] if runuser else \
                ["su", self.user, "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in cmd)]
        return subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        """initdb, then start on a free port (a few tries, in case another process takes the port first)."""
        t0 = time.perf_counter()
        done = self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
                         "--encoding=UTF8", "--no-locale")
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        for _attempt in range(3):
            self.port = free_port()
            options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                             "-o", options, "start")
            if done.returncode == 0:
                self.seconds = time.perf_counter() - t0
                return self
        log = (self.root / "server.log").read_text(errors="replace")[-2000:] if (self.root / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {done.stdout}{done.stderr}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The same database through the unix socket in the temporary directory."""
        return f"postgresql://{SUPERUSER}@/{database}?host={self.root}&port={self.port}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once and remove its directory."""
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
