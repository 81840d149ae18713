"""Real services for the tests: PostgreSQL, Redis and `comments-api serve` processes.

Nothing here is a mock. When a binary is missing the test skips locally, but fails in CI
(CI=true), where a missing component means the machine was set up wrong.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
VENV_BIN = Path(sys.executable).parent


def missing(what: str) -> None:
    """Skip locally, fail in CI: no test may silently skip there."""
    if IN_CI:
        pytest.fail(f"required component missing in CI: {what}", pytrace=False)
    pytest.skip(f"{what} not available")


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax, e.g. ``64k``) mounted at ``path``, a new
    directory, for the duration: a volume that really fills up. Needs root and mount(8)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        missing("root and mount(8), to mount a small tmpfs")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        missing(f"permission to mount a tmpfs ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@contextlib.contextmanager
def bind_mount(source: Path, path: Path) -> Iterator[Path]:
    """The directory ``source`` also reached at ``path``, a new directory, for the
    duration: one directory by two paths that realpath cannot tell are one. Needs root and
    mount(8)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        missing("root and mount(8), to bind-mount a directory")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "--bind", str(source), str(path)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        missing(f"permission to bind-mount a directory ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def hold_inserts_at_gate(engine: Any, body: str, gate: tuple[int, int]) -> None:
    """PostgreSQL, on a test's own database: an insert of a comment whose text is ``body``
    waits inside its transaction, its id taken (column defaults come before BEFORE
    triggers), until ``gate`` (a two-int advisory lock, another key space than the
    repository's one-bigint locks) is free: a test holds it to stop a write there."""
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION hold_at_gate() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.body = '{body}' THEN "
                f"PERFORM pg_advisory_xact_lock_shared({int(gate[0])}, {int(gate[1])}); "
                "END IF; RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER hold_at_gate BEFORE INSERT ON comments "
                "FOR EACH ROW EXECUTE FUNCTION hold_at_gate()"
            )
        )


@contextlib.contextmanager
def gated_postgres(url: str, body: str, gate: tuple[int, int]) -> Iterator[Any]:
    """A migrated engine on a test's own PostgreSQL database whose inserts of ``body``
    stop at ``gate`` (hold_inserts_at_gate); disposed afterwards."""
    from comments_api.store.repository import make_engine, migrate

    engine = make_engine(url)
    try:
        migrate(engine)
        hold_inserts_at_gate(engine, body, gate)
        yield engine
    finally:
        engine.dispose()


def locks_waited_for(engine: Any, locktype: str | None = None) -> int:
    """PostgreSQL: how many locks sessions wait for (of ``locktype`` only, if given)."""
    from sqlalchemy import text

    query = "SELECT count(*) FROM pg_locks WHERE NOT granted"
    with engine.connect() as conn:
        if locktype is None:
            return int(conn.execute(text(query)).scalar_one())
        return int(conn.execute(text(query + " AND locktype = :t"), {"t": locktype}).scalar_one())


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as the 'postgres' OS user.

    Tests run it without fsync; bench/run.py passes ``durable=True``: fsync stays on, so
    checkpoints reach the disk and only commits skip the wait (like our SQLite default).
    """

    def __init__(self, durable: bool = False) -> None:
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if not initdb or not pg_ctl:
            missing("PostgreSQL server binaries (initdb, pg_ctl)")
        self.pg_ctl = pg_ctl
        self.dir = Path(tempfile.mkdtemp(prefix="comments-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            [
                initdb,
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
            "-c synchronous_commit=off -c max_connections=200"
        )
        if not durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._options = options
        self.resume()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def halt(self) -> None:
        """Stop the server (fast shutdown: sessions end), keeping its data for ``resume``."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def resume(self) -> None:
        """Start it, on the same port and socket directory."""
        self._run(
            [self.pg_ctl, "-D", str(self.data), "-o", self._options, "-l",
             str(self.dir / "log"), "-w", "-t", "60", "start"]
        )  # fmt: skip

    def _run(self, cmd: list[str]) -> None:
        subprocess.run([*self._as_user, *cmd], check=True, capture_output=True, cwd=self.dir)

    def superuser(self, database: str = "postgres") -> Any:
        """An autocommit connection as the superuser (trusted), for setting things up."""
        import psycopg

        return psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname={database}", autocommit=True
        )

    def live_sessions(self, database: str) -> set[int]:
        """The PIDs of the server sessions connected to ``database``."""
        with self.superuser() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchall()
        return {int(pid) for (pid,) in rows}

    def end_sessions(self, database: str, pids: set[int] | None = None) -> int:
        """Terminate ``pids`` (default: every session of ``database``), as a failover or a
        connection recycle would, and wait until they are gone: pg_terminate_backend only
        signals, and a request sent at once could still meet a session on its way out.
        Returns how many were ended."""
        ending = self.live_sessions(database) if pids is None else pids
        with self.superuser() as conn:
            for pid in ending:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 5
        while ending & self.live_sessions(database) and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(ending)

    def create_database(self, name: str) -> str:
        with self.superuser() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def add_password_role(self, role: str, password: str, database: str) -> None:
        """A login role that must give its password over TCP (the cluster trusts every
        other role): its pg_hba line goes first, and the server reloads."""
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with self.superuser(database) as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.execute(f"GRANT ALL ON SCHEMA public TO {role}")
            conn.execute(f'GRANT ALL ON DATABASE "{database}" TO {role}')
            conn.execute("SELECT pg_reload_conf()")

    def server_pids(self) -> list[int]:
        """The postmaster's PID (bench/run.py counts its CPU time)."""
        try:
            return [int((self.data / "postmaster.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    def stop(self) -> None:
        subprocess.run(
            [*self._as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """PgBouncer (Debian's, 1.18) on a free loopback port in front of ``server``: one
    pooler database per entry of ``databases`` (pooler name -> (database, pool mode)), with
    PgBouncer's defaults otherwise (no ``ignore_startup_parameters``) but ``settings``. Run as the
    'postgres' OS user when root: PgBouncer refuses to run as root."""

    def __init__(
        self,
        server: PostgresServer,
        databases: Mapping[str, tuple[str, str]],
        settings: Mapping[str, str] | None = None,
    ) -> None:
        binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
        if not binary:
            missing("pgbouncer")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="comments-pgbouncer-"))
        lines = ["[databases]"]
        for name, (database, mode) in databases.items():
            lines.append(
                f"{name} = host=127.0.0.1 port={server.port} dbname={database} pool_mode={mode}"
            )
        lines += [
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.dir / 'users.txt'}",
            "default_pool_size = 4",
            f"logfile = {self.dir / 'pgbouncer.log'}",
            *(f"{key} = {value}" for key, value in (settings or {}).items()),
        ]
        (self.dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.dir / "users.txt").write_text('"postgres" ""\n')
        as_user: list[str] = []
        if os.geteuid() == 0:
            for path in (self.dir, *self.dir.iterdir()):
                shutil.chown(path, "postgres", "postgres")
            as_user = ["runuser", "-u", "postgres", "--"]
        self.proc = subprocess.Popen(
            [*as_user, binary, str(self.dir / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        if not wait_until(ready, 10):
            self.stop()
            raise RuntimeError("pgbouncer did not start")

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()  # runuser passes SIGTERM on to pgbouncer
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server on a free loopback port; ``requirepass`` makes it refuse clients
    without that password (``url`` then carries it)."""

    def __init__(self, requirepass: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            missing("redis-server")
        self.port = free_port()
        self.password = requirepass
        command = [binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no"]
        if requirepass is not None:
            command += ["--requirepass", requirepass]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        auth = f":{requirepass}@" if requirepass is not None else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"

        def ready() -> bool:
            # PING answers -NOAUTH without the password: any answer means it is up.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith((b"+PONG", b"-NOAUTH"))
            except OSError:
                return False

        if not wait_until(ready, 10):
            self.stop()
            raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class ServiceProcess:
    """`comments-api serve` as operators run it: real gunicorn master and workers."""

    def __init__(self, env: Mapping[str, str], workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        # Mounted under SCRIPT_NAME, every path of the app is under it, /readyz included.
        self.base = f"http://127.0.0.1:{self.port}{env.get('SCRIPT_NAME', '')}"
        self.workdir = workdir
        self.env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": str(workers),
            "LOG_LEVEL": "warning",
            **env,
        }
        self.log_path = workdir / f"serve-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "comments-api"), "serve"],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"serve exited early:\n{self.log()}")
            try:
                return requests.get(f"{self.base}/readyz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        if not wait_until(ready, timeout):
            self.stop()
            raise RuntimeError(f"serve never became ready:\n{self.log()}")
        # /readyz answers as soon as one worker is up; a test that signals the master
        # must not catch another still booting (gunicorn reports that as a failed boot).
        if self.env.get("METRICS_ENABLED", "true").lower() not in {"0", "false", "no", "off"}:
            booted = f"comments_api_workers {float(self.env['WORKERS'])}"

            def all_booted() -> bool:
                try:
                    return booted in requests.get(f"{self.base}/metrics", timeout=1).text
                except requests.RequestException:
                    return False

            if not wait_until(all_booted, timeout):
                self.stop()
                raise RuntimeError(f"not every worker booted:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def marker_rows(engine: Any) -> dict[str, int]:
    """The read cache's change-marker rows (content_versions): content id -> value."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT content_id, version FROM content_versions")
        return {content: version for content, version in rows}


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = requests.get(f"{base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_in_flight(metrics_dir: Path) -> float:
    """comments_api_http_requests_in_flight summed over the live workers, read from the
    files they write in ``metrics_dir`` (the service's PROMETHEUS_MULTIPROC_DIR). No request
    of its own: a scrape would wait behind the very requests it looks for when every worker
    (or thread) is busy, and counts itself in flight. 0 while no worker has a file yet."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = []
    for path in glob.glob(str(metrics_dir / "gauge_livesum_*.db")):
        with contextlib.suppress(FileNotFoundError):  # a dead worker's, removed meanwhile
            if os.path.getsize(path) >= 8:  # a booting worker's file has no sample yet
                files.append(path)
    try:
        merged = MultiProcessCollector.merge(files, accumulate=True)
    except FileNotFoundError:  # removed between the listing and the read: ask again
        return 0.0
    return sum(
        s.value
        for family in merged
        if family.name == "comments_api_http_requests_in_flight"
        for s in family.samples
    )


def flock_held(path: Path) -> bool:
    """Whether a process holds an flock on ``path`` now, as /proc/locks lists it: seen
    without taking it (a try by the test could make the holder wait)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        # "7: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; a waiter's has "->" after "7:"
        fields = line.split()
        if fields[1] == "FLOCK" and fields[5] == device:
            return True
    return False


def server_socket_inodes(port: int) -> dict[int, int]:
    """client port -> inode of the server-side socket, for loopback connections to ``port``."""
    found: dict[int, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], int(fields[9])
        if int(local.split(":")[1], 16) == port and inode:
            found[int(remote.split(":")[1], 16)] = inode
    return found


def server_sockets_read(port: int) -> set[int]:
    """The client ports of loopback connections to ``port`` that the server has accepted
    (the socket has an inode) and read all that came so far (its receive queue is empty).
    Not the listening socket (state 0A), whose receive queue is its backlog: with none
    waiting it looked like a connection read (client port 0), and a count of these was
    one too many."""
    read: set[int] = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues, inode = fields[1], fields[2], fields[4], int(fields[9])
        if fields[3] == "0A":
            continue
        if int(local.split(":")[1], 16) == port and inode and queues.endswith(":00000000"):
            read.add(int(remote.split(":")[1], 16))
    return read


def socket_owners(pids: list[int]) -> dict[int, int]:
    """socket inode -> the pid holding it open."""
    owners: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owners[int(target[8:-1])] = pid
    return owners
