"""The image run hardened, as Kubernetes will: walkthrough, probes, metrics, budgets."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..authkit import (
    AUDIENCE,
    ISSUER,
    bearer,
    ec_signer,
    jwks,
    jwks_server,
    rsa_signer,
    unsigned_token,
)
from ..support import PostgresServer
from .conftest import RUNTIME_UID, Container, docker

pytestmark = pytest.mark.docker

READY_BUDGET_S = 3.0
RSS_BUDGET_BYTES = 150e6


def test_original_curl_walkthrough(app_container: Container):
    base = app_container.base
    created = requests.post(
        f"{base}/api/comment/new",
        json={"email": "alice@example.com", "comment": "first post!", "content_id": 1},
        timeout=5,
    )
    assert created.status_code == 200
    assert created.json()["status"] == "SUCCESS"
    listed = requests.get(f"{base}/api/comment/list/1", timeout=5)
    assert listed.status_code == 200
    [comment] = listed.json()
    assert comment["comment"] == "first post!"
    assert set(comment) == {"email", "comment"}
    missing = requests.get(f"{base}/api/comment/list/404", timeout=5)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/")
    assert "json" in missing.headers["Content-Type"]
    # The default database, from the image's WORKDIR /, is the /data volume's file.
    stored = app_container.python("import os; print(os.path.getsize('/data/comments.db') > 0)")
    assert stored.stdout.strip() == "True", stored.stderr


def test_probes_metrics_and_shell_free_healthcheck(app_container: Container):
    base = app_container.base
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    requests.get(f"{base}/api/comment/list/1", timeout=5)
    metrics = requests.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE " in metrics.text
    assert re.search(r"^comments_api_\w+(\{[^}]*\})? [0-9.e+-]+$", metrics.text, re.M)
    # The image's HEALTHCHECK command, run inside the container (no shell, no curl).
    check = app_container.exec("/venv/bin/comments-api", "healthcheck")
    assert check.returncode == 0, check.stderr


def test_runs_as_non_root_without_capabilities_on_a_read_only_root(app_container: Container):
    probe = app_container.python(
        "import json, os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/1/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "try:\n    open('/venv/probe', 'w'); writable = True\n"
        "except OSError as e:\n    writable = e.strerror\n"
        "print(json.dumps({'uid': status['Uid'].split()[0], 'cap': status['CapEff'].strip(),"
        " 'nnp': status['NoNewPrivs'].strip(), 'root_write': writable}))"
    )
    assert probe.returncode == 0, probe.stderr
    facts = json.loads(probe.stdout)
    assert facts["uid"] == str(RUNTIME_UID)
    assert int(facts["cap"], 16) == 0
    assert facts["nnp"] == "1"
    assert facts["root_write"] == "Read-only file system"


def test_ready_within_budget_and_idle_memory_with_default_workers(start_container, budgets):
    container = start_container()  # WORKERS unset: the default, max(2, CPUs)
    elapsed = container.wait_ready()
    budgets["ready_seconds"] = round(elapsed, 2)
    assert elapsed <= READY_BUDGET_S

    cpus = int(container.python("import os; print(os.cpu_count())").stdout)
    workers = max(2, cpus)
    # Ready means one worker answers; the master may still be forking the others.
    deadline = time.monotonic() + READY_BUDGET_S
    while True:
        processes = docker("top", container.id).stdout.strip().splitlines()[1:]
        if len(processes) >= 1 + workers or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(processes) == 1 + workers, processes

    time.sleep(3)  # idle: workers booted, nothing in flight
    stats = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container.id).stdout
    used = stats.split("/")[0].strip()
    number, unit = re.fullmatch(r"([0-9.]+)\s*([KMG]i?B)", used).groups()
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    rss = float(number) * scale[unit]
    budgets["idle_memory_mb"] = round(rss / 1e6, 1)
    budgets["workers"] = workers
    assert rss < RSS_BUDGET_BYTES


def test_postgresql_through_psycopg_binary(start_container, pg_server):
    url = pg_server.create_database("container_walkthrough")
    container = start_container({"DATABASE_URL": url})
    container.wait_ready()
    body = {"email": "bob@example.com", "comment": "on postgres", "content_id": 7}
    assert requests.post(f"{container.base}/api/comment/new", json=body, timeout=5).ok
    listed = requests.get(f"{container.base}/api/comment/list/7", timeout=5).json()
    assert [c["comment"] for c in listed] == ["on postgres"]


def test_database_url_from_a_secret_file_alone(start_container, pg_server, tmp_path):
    """`docker run -e DATABASE_URL_FILE=… -v secret:…` with nothing else. The image used to
    set DATABASE_URL too, and the app refuses both: the container exited at start unless
    the caller also knew to set DATABASE_URL= empty."""
    secret = tmp_path / "database-url"
    secret.write_text(pg_server.create_database("container_url_file") + "\n")
    tmp_path.chmod(0o755)
    secret.chmod(0o644)  # the runtime user is not this test's
    container = start_container(
        {"DATABASE_URL_FILE": "/run/secrets/database-url"},
        volumes=(f"{secret}:/run/secrets/database-url:ro",),
    )
    container.wait_ready()
    body = {"email": "carol@example.com", "comment": "from a file", "content_id": 8}
    assert requests.post(f"{container.base}/api/comment/new", json=body, timeout=5).ok
    listed = requests.get(f"{container.base}/api/comment/list/8", timeout=5).json()
    assert [c["comment"] for c in listed] == ["from a file"]
    # PostgreSQL, not a SQLite file on the volume.
    on_volume = container.python("import os; print(sorted(os.listdir('/data')))").stdout
    assert on_volume.strip() == "[]"


def test_sigterm_during_traffic_drops_nothing_and_exits_zero(start_container):
    # SHUTDOWN_DELAY: readiness turns 503 while the pod keeps serving, as in Kubernetes.
    # Rate limits off: this test is about shutdown, not abuse protection.
    env = {
        "SHUTDOWN_DELAY": "2",
        "WORKERS": "2",
        "THREADS": "2",
        "RATELIMIT_ENABLED": "false",
        "THREAD_AUTHOR_MAX": "100000",
    }
    container = start_container(env)
    container.wait_ready()
    base = container.base
    stop = threading.Event()
    ok: list[int] = []
    failures: list[str] = []

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set() and i < 2000:  # bounded
            i += 1
            try:
                if i % 2:
                    payload = {"email": f"u{n}@example.com", "comment": f"c{i}", "content_id": n}
                    response = session.post(f"{base}/api/comment/new", json=payload, timeout=5)
                else:
                    response = session.get(f"{base}/api/comment/list/{n}", timeout=5)
                if response.status_code == 200:
                    ok.append(1)
                else:
                    failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    before_term = len(ok)
    stopper = threading.Thread(target=docker, args=("stop", "--time", "30", container.id))
    stopper.start()
    # Like a load balancer: keep sending until readiness says "shutting down", then a
    # little longer (endpoint removal lag), then stop routing to this pod.
    deadline = time.monotonic() + 10
    draining = False
    while time.monotonic() < deadline and not draining:
        try:
            draining = requests.get(f"{base}/readyz", timeout=2).status_code == 503
        except requests.RequestException:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    stopper.join(60)

    assert draining, "readiness never reported shutting down"
    assert failures == []
    assert len(ok) > before_term  # traffic kept flowing after SIGTERM
    assert container.state("{{.State.Running}}") == "false"
    assert container.state("{{.State.ExitCode}}") == "0", container.logs()[-2000:]


def test_image_defaults_serve_on_all_interfaces_and_report_healthy(image):
    # `docker run -p 8000:8000 -e PORT=8000 comments-api` relies on these defaults. No
    # port publishing here: --network none, probed from inside with the HEALTHCHECK. /data
    # is the image's anonymous VOLUME, writable by UID 65532 despite --read-only.
    run = docker(
        "run",
        "--detach",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--env",
        "PORT=8000",
        image,
    )
    container_id = run.stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while True:
            check = docker(
                "exec", container_id, "/venv/bin/comments-api", "healthcheck", check=False
            )
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert check.returncode == 0, check.stderr + docker("logs", container_id).stderr[-2000:]
        assert "127.0.0.1:8000/readyz" in check.stdout
        logs = docker("logs", container_id)
        assert "0.0.0.0:8000" in logs.stdout + logs.stderr
        # Docker's own HEALTHCHECK run (first one after the 10 s interval) agrees.
        deadline = time.monotonic() + 40
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(1)
            health = docker("inspect", "-f", "{{.State.Health.Status}}", container_id).stdout
            health = health.strip()
        assert health == "healthy"
    finally:
        docker("rm", "--force", "--volumes", container_id, check=False)


@pytest.mark.redis
def test_jwks_tokens_and_redis_rate_limits_from_the_packed_venv(start_container, redis_server):
    # The venv ships as bytecode, mostly from a zip (issue #5): this drives the lazily
    # imported paths the other tests don't: PyJWT's JWKS client and cryptography's RSA
    # and EC keys, and limits' Redis storage, whose Lua scripts are package data.
    rs, es = rsa_signer(), ec_signer()
    # Fresh readers and a Redis database of their own: no counters from earlier runs.
    db, run = random.randint(1, 15), random.getrandbits(32)
    with jwks_server(jwks(rs, es)) as provider:
        env = {
            "JWT_JWKS_URL": provider["url"],
            "JWT_ISSUER": ISSUER,
            "JWT_AUDIENCE": AUDIENCE,
            "RATELIMIT_STORAGE_URL": f"redis://127.0.0.1:{redis_server.port}/{db}",
            "RATELIMIT_AUTHENTICATED_WRITE": "2/minute",
        }
        container = start_container(env)
        container.wait_ready()
        url = f"{container.base}/api/v1/contents/packed/comments"

        def post(signer, n: int) -> int:
            body = {"body": f"comment {n}"}
            headers = bearer(signer.token(subject=f"reader-{signer.alg}-{run}"))
            return requests.post(url, json=body, headers=headers, timeout=10).status_code

        assert [post(rs, n) for n in range(3)] == [201, 201, 429], container.logs()[-2000:]
        assert [post(es, n) for n in range(3)] == [201, 201, 429], container.logs()[-2000:]
        forged = requests.post(
            url, json={"body": "x"}, headers=bearer(unsigned_token()), timeout=10
        )
        assert forged.status_code == 401
        assert provider["hits"] >= 1


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)  # PostgreSQL refuses a key others can read
    if os.geteuid() == 0:
        for path in (cert_file, key_file):
            shutil.chown(path, "postgres", "postgres")
    return cert_file, key_file


def test_postgresql_over_tls_with_the_base_images_openssl(start_container):
    # psycopg-binary's bundled OpenSSL is replaced by links to the base image's libssl3
    # (issue #5): a TLS session to a real PostgreSQL proves libpq works with it.
    server = PostgresServer()
    try:
        cert_file, key_file = _self_signed_certificate(server.dir)
        with psycopg.connect(
            f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"ALTER SYSTEM SET ssl_cert_file = '{cert_file}'")
            conn.execute(f"ALTER SYSTEM SET ssl_key_file = '{key_file}'")
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")
        url = server.create_database("container_tls") + "?sslmode=require"
        container = start_container({"DATABASE_URL": url})
        container.wait_ready()
        body = {"email": "tls@example.com", "comment": "over TLS", "content_id": 9}
        assert requests.post(f"{container.base}/api/comment/new", json=body, timeout=5).ok
        listed = requests.get(f"{container.base}/api/comment/list/9", timeout=5).json()
        assert [c["comment"] for c in listed] == ["over TLS"]
        code = (
            "import json, sys, psycopg\n"
            "conn = psycopg.connect(sys.argv[1])\n"
            "row = conn.execute('SELECT ssl, version FROM pg_stat_ssl"
            " WHERE pid = pg_backend_pid()').fetchone()\n"
            "print(json.dumps({'ssl': row[0], 'version': row[1], 'impl': psycopg.pq.__impl__}))"
        )
        conninfo = f"host=127.0.0.1 port={server.port} user=postgres dbname=container_tls"
        probe = container.exec("/venv/bin/python", "-c", code, conninfo + " sslmode=require")
        assert probe.returncode == 0, probe.stderr
        facts = json.loads(probe.stdout)
        assert facts["ssl"] is True
        assert facts["version"].startswith("TLSv1.")
        assert facts["impl"] == "binary"
    finally:
        server.stop()
