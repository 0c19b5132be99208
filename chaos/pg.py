"""A Postgres cluster the harness owns and may restart, crash, replicate and promote: the binaries shipped
inside the `pgserver` wheel (`initdb`, `pg_ctl`, `pg_basebackup`) on a free TCP port in a temp folder.

Nothing here depends on a system Postgres. As root, every server command runs as pgserver's own system user
(Postgres refuses to run as root), exactly as `pgserver` itself does.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import pathlib
import pwd
import shutil
import subprocess

import asyncpg


def _bin() -> pathlib.Path:
    # Located, not imported: importing pgserver warns (platformdirs) and the tests turn warnings into errors.
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the pgserver package is not installed (it ships the Postgres binaries)")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


BIN = _bin()
SYSTEM_USER = "pgserver"  # the user pgserver creates when run as root
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
max_connections = 200
shared_buffers = 64MB
fsync = off                       # a test cluster: no OS crash to survive, only process crashes
full_page_writes = off
wal_level = replica
max_wal_senders = 5
wal_keep_size = 256MB
hot_standby = on
log_min_messages = warning
log_line_prefix = '%m [%p] '
"""


def _user() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _run(args: list[str], *, timeout: float = 120) -> str:
    """Run a Postgres binary (as the server's system user when root); raises with its output on failure."""
    user = _user()
    done = subprocess.run(  # noqa: S603 - our own binaries, fixed arguments
        [str(BIN / args[0]), *args[1:]],
        capture_output=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        user=user,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stdout[-2000:]}")
    return done.stdout


def _own(path: pathlib.Path) -> None:
    """Make `path` (a folder) usable by the server's system user."""
    path.mkdir(parents=True, exist_ok=True)
    user = _user()
    if user is None:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/sh", user], check=True, capture_output=True)  # noqa: S603,S607
        entry = pwd.getpwnam(user)
    for folder in (path.parent, *path.parent.parents, BIN, *BIN.parents):
        folder.chmod(folder.stat().st_mode | 0o055)  # others may traverse the prefix (as pgserver does)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o700)


class Cluster:
    """One server: data folder `root/data`, log `root/server.log`, TCP port `port`."""

    def __init__(self, root: pathlib.Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.sockets = root / "sock"
        self.logfile = root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        _own(self.sockets)
        self.sockets.chmod(0o755)
        user = _user()
        if user is not None:
            entry = pwd.getpwnam(user)
            self.logfile.touch()
            os.chown(self.logfile, entry.pw_uid, entry.pw_gid)

    def _configure(self, extra: str = "") -> None:
        conf = self.data / "postgresql.auto.conf"
        with conf.open("a") as f:
            f.write(SETTINGS.format(port=self.port, socket_dir=self.sockets) + extra)

    def init(self, extra_settings: str = "") -> None:
        """initdb (trust auth on loopback, replication allowed) and write the settings."""
        self._prepare_root()
        _own(self.data)
        _run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        self._configure(extra_settings)

    def standby_of(self, primary: Cluster, *, application_name: str) -> None:
        """pg_basebackup -R from `primary`: a streaming standby with its own port."""
        self._prepare_root()
        _own(self.data)
        _run(
            [
                "pg_basebackup",
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",  # the default (spread) waits out a paced checkpoint: over a minute
                "--no-sync",
                "-d",
                f"application_name={application_name}",
            ]
        )
        # pg_basebackup copied the primary's settings (its port too): ours win, appended last.
        self._configure()

    def ctl(self, *args: str, timeout: float = 120) -> str:
        return _run(
            ["pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", str(int(timeout)), *args],
            timeout=timeout + 10,
        )

    def start(self) -> None:
        self.ctl("start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("stop", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        """pg_ctl restart -m fast|immediate (immediate: a crash, recovery replays the WAL)."""
        self.ctl("restart", "-m", mode)

    def promote(self) -> None:
        self.ctl("promote")

    def running(self) -> bool:
        try:
            self.ctl("status")
        except RuntimeError:
            return False
        return True

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    async def arun(self, method: str, *args: str) -> None:
        """Run one of the blocking methods above in a thread (the harness's loop keeps serving)."""
        await asyncio.to_thread(getattr(self, method), *args)

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)
