"""The RDS URL verifies the server: Terraform's ``database_url_template`` (modules/database)
asks for ``sslmode=verify-full`` against the CA bundle components/database-rds mounts, and a
real PostgreSQL serving TLS shows what that means for the app.

A throwaway CA signs the server's certificate (for 127.0.0.1 and localhost). The app
connects when the bundle holds that CA (among others, as AWS's bundles do) and refuses when
it holds only another CA, when the host name is not the certificate's, or when the bundle
file is not there (a URL applied without its mount). ``sslmode=require`` (what the template
said before) connected in every one of those cases.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from comments_api.store.repository import make_engine

from .support import VENV_BIN, PostgresServer, missing

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ROOT / "deploy" / "terraform" / "modules" / "database" / "outputs.tf"


def template_query() -> dict[str, str]:
    """The query of Terraform's database_url_template: what the app gets on RDS."""
    block = re.search(
        r'output "database_url_template" \{.*?value\s*=\s*"[^"?]*\?([^"]*)"',
        OUTPUTS.read_text(),
        re.S,
    )
    assert block, f"{OUTPUTS}: no database_url_template with a query"
    return dict(parse_qsl(block.group(1), strict_parsing=True))


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA (key and certificate) in directory; returns the certificate."""
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def server_certificate(directory: Path, ca: str) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost signed by ca: (cert, key)."""
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
        "server.csr", "-subj", "/CN=localhost",
        cwd=directory,
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
        cwd=directory,
    )  # fmt: skip
    return directory / "server.pem", directory / "server.key"


@dataclass
class TlsDatabase:
    pg: PostgresServer
    role: str
    password: str
    database: str
    trusted: Path  # a bundle holding the server's CA (and another one)
    untrusted: Path  # a bundle holding another CA only

    def url(self, bundle: Path, host: str = "127.0.0.1", **extra: str) -> str:
        """The template's URL form, its sslrootcert pointing at bundle."""
        query = template_query()
        if "sslrootcert" in query:
            query["sslrootcert"] = str(bundle)
        query.update(extra)
        return (
            f"postgresql+psycopg://{self.role}:{self.password}@{host}:{self.pg.port}/"
            f"{self.database}?{urlencode(query)}"
        )


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDatabase]:
    if not shutil.which("openssl"):
        missing("openssl")
    pki = tmp_path_factory.mktemp("pki")
    ca = make_ca(pki, "test-rds-ca")
    other = make_ca(pki, "other-ca")
    cert, key = server_certificate(pki, "test-rds-ca")
    trusted, untrusted = pki / "trusted-bundle.pem", pki / "untrusted-bundle.pem"
    # Several CAs in one file, the server's last: AWS's bundles are like that.
    trusted.write_text(other.read_text() + ca.read_text())
    untrusted.write_text(other.read_text())

    pg = PostgresServer()
    try:
        # PostgreSQL wants its key private to its own user.
        for path in (cert, key):
            target = pg.dir / path.name
            shutil.copy(path, target)
            target.chmod(0o600)
            if os.geteuid() == 0:
                shutil.chown(target, "postgres", "postgres")
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"ssl = on\nssl_cert_file = '{pg.dir / cert.name}'\n"
                f"ssl_key_file = '{pg.dir / key.name}'\n"
            )
        suffix = uuid.uuid4().hex[:10]
        role, database, password = f"app_{suffix}", f"tls_{suffix}", secrets.token_hex(16)
        pg.create_database(database)
        pg.add_password_role(role, password, database)
        # As RDS's rds.force_ssl=1 (modules/database): no connection without TLS.
        hba = pg.data / "pg_hba.conf"
        hba.write_text("hostnossl all all 127.0.0.1/32 reject\n" + hba.read_text())
        pg.halt()  # ssl = on needs a restart
        pg.resume()
        yield TlsDatabase(pg, role, password, database, trusted, untrusted)
    finally:
        pg.stop()


def migrate(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`comments-api migrate` as the Kubernetes Job runs it: the URL from a mounted file."""
    url_file = tmp_path / "database-url"
    url_file.write_text(url + "\n")
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        env={**os.environ, "DATABASE_URL_FILE": str(url_file), "DATABASE_URL": ""},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tables(db: TlsDatabase) -> set[str]:
    with db.pg.superuser(db.database) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_template_asks_for_a_verified_server() -> None:
    query = template_query()
    assert query["sslmode"] == "verify-full", query
    assert query["sslrootcert"].startswith("/etc/rds-ca/"), query


def test_connects_over_tls_when_the_bundle_holds_the_servers_ca(tls_db: TlsDatabase) -> None:
    engine = make_engine(tls_db.url(tls_db.trusted))
    try:
        with engine.connect() as conn:
            ssl, user = conn.execute(
                text("SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ).one()
    finally:
        engine.dispose()
    assert (ssl, user) == (True, tls_db.role)


def test_migrate_job_runs_with_the_bundle_and_is_refused_without_the_servers_ca(
    tls_db: TlsDatabase, tmp_path: Path
) -> None:
    refused = migrate(tls_db.url(tls_db.untrusted), tmp_path)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "certificate verify failed" in refused.stdout + refused.stderr
    assert "alembic_version" not in tables(tls_db)  # nothing reached the server

    migrated = migrate(tls_db.url(tls_db.trusted), tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "database is at revision" in migrated.stdout
    assert "alembic_version" in tables(tls_db)


def test_refuses_a_certificate_for_another_host_name(tls_db: TlsDatabase) -> None:
    # The right CA, the wrong name: verify-full checks the host too (hostaddr keeps the
    # connection on loopback without resolving the name).
    url = tls_db.url(tls_db.trusted, host="db.invalid", hostaddr="127.0.0.1")
    engine = make_engine(url)
    try:
        with pytest.raises(OperationalError, match="does not match host name"), engine.connect():
            pass
    finally:
        engine.dispose()


def test_refuses_without_the_bundle_file(tls_db: TlsDatabase, tmp_path: Path) -> None:
    # The URL applied without the ConfigMap mounted: libpq does not fall back to an
    # unverified connection.
    refused = migrate(tls_db.url(tmp_path / "absent" / "rds-ca-bundle.pem"), tmp_path)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "root certificate file" in refused.stdout + refused.stderr
