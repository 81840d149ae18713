"""scripts/k8s-local.sh and docs/deployment.md's Secrets commands against a kubectl stand-in
(no Kubernetes control plane runs here).

The stand-in is tests/deploy's: Secrets are JSON files, and every call's arguments are
logged, as `ps` would show them to any user of the host while kubectl runs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ..deploy.test_tools import KUBECTL_SECRETS
from ..support import missing
from .conftest import ROOT

pytestmark = pytest.mark.pipeline


def stored_secret(store: Path, name: str) -> dict[str, str]:
    """A Secret the kubectl stand-in stored, its values decoded."""
    data = json.loads((store / f"{name}.json").read_text())
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_k8s_local_keeps_every_secret_value_off_kubectls_command_line(tmp_path: Path) -> None:
    # The database password, the URL carrying it, the client-IP salt and the Redis password
    # went to kubectl as --from-literal=KEY=VALUE: readable in the process list.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL_SECRETS)
    for name in ("make", "minikube"):  # the image build and load are not what is tested
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    store = tmp_path / "secrets"
    store.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STORE": str(store)}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "k8s-local.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    db, api, redis = (
        stored_secret(store, n)
        for n in ("comments-db-credentials", "comments-api", "comments-redis")
    )
    password = db["password"]
    redis_password = redis["redis.conf"].removeprefix("requirepass ")
    assert len(password) == 48
    assert len(redis_password) == 48
    # The values are whole and consistent with each other.
    assert api["database-url"] == f"postgresql+psycopg://app:{password}@comments-db-rw:5432/app"
    assert redis["url"] == f"redis://:{redis_password}@comments-redis:6379/0"
    assert len(api["client-ip-hash-salt"]) == 64
    calls = (store / "calls.log").read_text()
    assert calls.count("create secret generic") == 3, calls
    for value in (password, redis_password, api["client-ip-hash-salt"]):
        assert value not in calls, calls
    assert proc.stdout.count(password) == proc.stderr.count(password) == 0


def test_the_documented_secret_commands_keep_every_value_off_the_command_line(
    tmp_path: Path,
) -> None:
    # docs/deployment.md, "Secrets": the commands an operator pastes for production gave
    # kubectl every password, the salt and the backup keys as --from-literal arguments.
    doc = (ROOT / "docs" / "deployment.md").read_text()
    section = doc.split("\n## Secrets\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "docs/deployment.md: no sh block under Secrets"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL_SECRETS)
    (bin_dir / "kubectl").chmod(0o755)
    store = tmp_path / "secrets"
    store.mkdir()
    backup = {"BACKUP_KEY_ID": "AKIAEXAMPLEKEYID0001", "BACKUP_SECRET": "b4ckup/s3cret+example"}
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STORE": str(store),
        **backup,
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    db, api, redis = (
        stored_secret(store, n)
        for n in ("comments-db-credentials", "comments-api", "comments-redis")
    )
    assert stored_secret(store, "comments-db-backup") == {
        "ACCESS_KEY_ID": backup["BACKUP_KEY_ID"],
        "ACCESS_SECRET_KEY": backup["BACKUP_SECRET"],
    }
    password = db["password"]
    redis_password = redis["redis.conf"].removeprefix("requirepass ")
    assert len(password) == 48
    assert len(redis_password) == 48
    assert api["database-url"] == (
        f"postgresql+psycopg://app:{password}@comments-db-rw:5432/app?sslmode=require"
    )
    assert re.fullmatch(r"[0-9a-f]{64}", api["client-ip-hash-salt"])
    assert redis["url"] == f"redis://:{redis_password}@comments-redis:6379/0"
    calls = (store / "calls.log").read_text()
    assert calls.count("create secret generic") == 4, calls
    for value in (password, redis_password, api["client-ip-hash-salt"], *backup.values()):
        assert value not in calls, calls


def k8s_local(bin_dir: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """k8s-local.sh with bin_dir as the whole PATH (plus what bash itself needs)."""
    for name in ("bash", "dirname", "sed", "cat", "openssl", "base64"):
        link = bin_dir / name
        found = shutil.which(name)
        if found and not link.exists():
            link.symlink_to(found)
    return subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts" / "k8s-local.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(bin_dir), "HOME": str(log.parent), "LOG": str(log)},
    )


def logging_stand_in(path: Path, rc: int = 0) -> None:
    path.write_text(f'#!/bin/sh\necho "{path.name} $*" >>"$LOG"\nexit {rc}\n')
    path.chmod(0o755)


def test_k8s_local_names_missing_tools_before_the_build(tmp_path: Path) -> None:
    # No minikube: the run built the image (minutes) and then died on "minikube: command
    # not found" at the load.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    logging_stand_in(bin_dir / "kubectl")
    proc = k8s_local(bin_dir, log)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "missing: make minikube (see docs/deployment.md, Local)" in proc.stderr
    assert not log.exists(), log.read_text()  # nothing ran


def test_k8s_local_stops_before_the_build_when_no_cluster_answers(tmp_path: Path) -> None:
    # A stopped minikube: the image was built and loaded (or not), and the first kubectl
    # failed with a connection error after it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    logging_stand_in(bin_dir / "kubectl", rc=1)  # every call fails, as with no API server
    logging_stand_in(bin_dir / "make")
    logging_stand_in(bin_dir / "minikube")
    proc = k8s_local(bin_dir, log)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no cluster answers on kubectl context comments (MINIKUBE_PROFILE)" in proc.stderr
    assert "run scripts/provision-k8s.sh first" in proc.stderr
    assert log.read_text() == "kubectl --context comments --request-timeout=5s get --raw /readyz\n"


def test_provision_leaves_the_current_kubectl_context_alone(tmp_path: Path) -> None:
    # `minikube start` (without --keep-context) and `minikube profile` both made the new
    # cluster the current kubectl context: a shell left on production silently moved to it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    proc = subprocess.run(  # a dry run needs none of the tools
        ["bash", str(ROOT / "scripts" / "provision-k8s.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    (start,) = [c for c in commands if c.startswith("minikube start ")]
    assert start.endswith(" --keep-context") or " --keep-context " in start, start
    for command in commands:
        assert not command.startswith("minikube profile"), command
        assert "use-context" not in command, command


# --- provision-k8s.sh --rds-ca-bundle ----------------------------------------------------

# A kubectl stand-in for `create configmap --dry-run=client -o yaml | apply -f -`: prints
# the ConfigMap as kubectl would, and keeps what apply received.
KUBECTL_CONFIGMAP = """#!/usr/bin/env python3
import json, os, pathlib, sys
store = pathlib.Path(os.environ["FAKE_STORE"])
args = sys.argv[1:]
with open(store / "calls.log", "a") as log:
    log.write("kubectl " + " ".join(args) + "\\n")
if "apply" in args:
    (store / "applied.json").write_text(sys.stdin.read())
elif "create" in args and "configmap" in args:
    data = {}
    for arg in args:
        if arg.startswith("--from-file="):
            key, _, path = arg.removeprefix("--from-file=").partition("=")
            data[key] = pathlib.Path(path).read_text()
    name = args[args.index("configmap") + 1]
    namespace = args[args.index("-n") + 1]
    print(json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": name, "namespace": namespace}, "data": data}))
"""


def ca_certificate(directory: Path, name: str, ca: bool = True) -> str:
    """A self-signed certificate's PEM text (a CA unless ca=False)."""
    constraints = "critical,CA:TRUE" if ca else "critical,CA:FALSE"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(directory / f"{name}.key"), "-out", str(directory / f"{name}.pem"),
         "-subj", f"/CN={name}", "-addext", f"basicConstraints={constraints}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return (directory / f"{name}.pem").read_text()


def provision_rds_ca(
    tmp_path: Path, bundle: Path, *extra: str, context: str | None = "eks-production"
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """provision-k8s.sh --rds-ca-bundle with kubectl stand-ins (and minikube/helm stand-ins
    that would log a call): (the run, the stand-in's store)."""
    bin_dir = tmp_path / "bin"
    store = tmp_path / "store"
    if not bin_dir.exists():
        bin_dir.mkdir()
        store.mkdir()
        (bin_dir / "kubectl").write_text(KUBECTL_CONFIGMAP)
        for name in ("minikube", "helm"):
            (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >>"$FAKE_STORE/calls.log"\n')
        for stand_in in bin_dir.iterdir():
            stand_in.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "FAKE_STORE": str(store),
    }
    if context is not None:
        env["KUBE_CONTEXT"] = context
    proc = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts" / "provision-k8s.sh"),
            "--rds-ca-bundle",
            str(bundle),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return proc, store


def test_provision_puts_the_rds_ca_bundle_in_a_configmap(tmp_path: Path) -> None:
    # components/database-rds mounts ConfigMap rds-ca-bundle where database_url_template's
    # sslrootcert points; nothing made it, so the verify-full URL could not connect.
    if not shutil.which("openssl"):
        missing("openssl")
    bundle = tmp_path / "global-bundle.pem"
    bundle.write_text(ca_certificate(tmp_path, "rds-ca-a") + ca_certificate(tmp_path, "rds-ca-b"))
    proc, store = provision_rds_ca(tmp_path, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 CA certificates" in proc.stdout
    applied = json.loads((store / "applied.json").read_text())
    assert applied["metadata"] == {"name": "rds-ca-bundle", "namespace": "comments-production"}
    assert applied["data"] == {"rds-ca-bundle.pem": bundle.read_text()}
    calls = (store / "calls.log").read_text().splitlines()
    # Only the ConfigMap, only on the named cluster: no minikube, no Helm.
    assert len(calls) == 2, calls
    assert all(
        c.startswith("kubectl --context eks-production -n comments-production ") for c in calls
    )
    # Again (a CA rotation): the same apply updates it.
    bundle.write_text(ca_certificate(tmp_path, "rds-ca-c"))
    proc, store = provision_rds_ca(tmp_path, bundle)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((store / "applied.json").read_text())["data"] == {
        "rds-ca-bundle.pem": bundle.read_text()
    }


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "is empty"),
        (
            "<!DOCTYPE html>\n<html><body><h1>403 Forbidden</h1></body></html>\n",
            "is not PEM certificates only (line 1)",
        ),
        ("{ca}\n<html>proxy login</html>\n", "is not PEM certificates only"),
        ("{ca}{key}", "is not PEM certificates only"),
        ("{cut}", "is not PEM certificates only (line end (a certificate is cut off))"),
        ("{ca}-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
         "certificate 2 does not parse"),
        ("{ca}{server}", "certificate 2 is not a CA certificate"),
        ("\n\n", "holds no certificate"),
    ],
    ids=["empty", "html", "trailing-html", "private-key", "truncated", "garbage-block",
         "server-cert", "blank"],
)  # fmt: skip
def test_provision_refuses_anything_but_ca_certificates(
    tmp_path: Path, content: str, says: str
) -> None:
    # An HTML error page or a proxy's login page saved as the bundle would have reached
    # every pod; libpq would then refuse every new connection to RDS.
    if not shutil.which("openssl"):
        missing("openssl")
    ca = ca_certificate(tmp_path, "rds-ca")
    server = ca_certificate(tmp_path, "server", ca=False)
    key = (tmp_path / "rds-ca.key").read_text()
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(content.format(ca=ca, server=server, key=key, cut=ca[: len(ca) // 2]))
    proc, store = provision_rds_ca(tmp_path, bundle)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"RDS CA bundle {bundle}" in proc.stderr
    assert says in proc.stderr, proc.stderr
    assert "https://truststore.pki.rds.amazonaws.com/" in proc.stderr
    assert not (store / "calls.log").exists()  # kubectl never ran


def test_provision_rds_ca_names_its_cluster_and_its_file(tmp_path: Path) -> None:
    # No default context: the script's default cluster is minikube, which has no RDS.
    if not shutil.which("openssl"):
        missing("openssl")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ca_certificate(tmp_path, "rds-ca"))
    proc, store = provision_rds_ca(tmp_path, bundle, context=None)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "KUBE_CONTEXT: name the kubectl context" in proc.stderr
    proc, store = provision_rds_ca(tmp_path, tmp_path / "absent.pem")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "absent.pem: no such readable file" in proc.stderr
    assert not (store / "calls.log").exists()


# --- provision-k8s.sh: the alert receivers' Secret ----------------------------------------
RECEIVERS_KUBECTL = """#!/bin/bash
echo "kubectl $*" >>"$LOG"
case "$*" in
  *"get secret alertmanager-receivers"*)
    case $RECEIVERS in
      error) echo "Error from server (InternalError): etcdserver: request timed out" >&2; exit 1 ;;
      absent) case "$*" in
          *--ignore-not-found*) exit 0 ;;
          *) echo 'Error from server (NotFound): secrets "..." not found' >&2; exit 1 ;;
        esac ;;
      exists) case "$*" in
          *jsonpath*) printf aHR0cHM6Ly9leGFtcGxl ;;
          *) echo secret/alertmanager-receivers ;;
        esac ;;
    esac ;;
  *"create namespace monitoring --dry-run"*) echo "apiVersion: v1" ;;
  *"apply -f -"*) cat >/dev/null ;;  # reads the manifest, as kubectl does
esac
exit 0
"""


@pytest.mark.parametrize("receivers", ["error", "absent", "exists"])
def test_provision_keeps_alert_routing_when_the_receivers_secret_cannot_be_read(
    tmp_path: Path, receivers: str
) -> None:
    # A failed read of Secret monitoring/alertmanager-receivers was taken for "no Secret":
    # the re-run upgraded kube-prometheus-stack without the routing values, so Alertmanager
    # went back to null routing (alerts to no one), and the script exited 0.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(RECEIVERS_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    for tool in ("helm", "minikube"):
        logging_stand_in(bin_dir / tool)
    log = tmp_path / "calls.log"
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "provision-k8s.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "LOG": str(log),
            "RECEIVERS": receivers,
        },
    )
    kps = [c for c in log.read_text().splitlines() if "install kube-prometheus-stack " in c]
    routing = "deploy/k8s/provision/alertmanager-values.yaml"
    if receivers == "error":
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "cannot tell whether Secret monitoring/alertmanager-receivers exists" in proc.stderr
        assert kps == []  # Alertmanager's routing is left as it is
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(kps) == 1, kps
        assert (routing in kps[0]) == (receivers == "exists"), kps[0]
