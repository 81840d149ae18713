"""dev.yml's E2E job makes the kind cluster's throwaway Secrets without a value on any
command line, as docs/deployment.md's "Secrets" commands and scripts/k8s-local.sh do.

The step's script runs here as the runner runs it (`bash -eo pipefail`), with the real `openssl` and
`jq`. kubectl is the real client too, for every `create secret`, with `--dry-run=client -o
json` added (no cluster can run here): the Secrets below are what kubectl itself made of
the step's arguments and files. `aws` is a stand-in that hands out an ECR token. Every
kubectl call's arguments are logged: no secret value may be among them (given as
`--from-literal` or `--docker-password`, each was readable in the process list)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import tool
from .test_tools import run_step, workflows
from .workflow_steps import DEV_IMAGE, step_of

pytestmark = pytest.mark.k8s

ECR_TOKEN = "eyJwYXlsb2FkIjoiZWNyLXRva2VuLWZvci10ZXN0cyJ9"  # what the stand-in aws hands out
REGISTRY_HOST = DEV_IMAGE.split("/")[0]


def secrets_step() -> dict[str, Any]:
    return step_of(workflows()["dev.yml"]["jobs"]["e2e"], run="create secret docker-registry")


def run_secrets_step(tmp_path: Path) -> tuple[int, str, list[str], dict[str, dict[str, Any]]]:
    kubectl = tool("kubectl")
    tool("jq")
    tool("openssl")
    made = tmp_path / "secrets"
    made.mkdir(parents=True)
    stand_ins = {
        # The real client makes each Secret (offline); the rest would need a cluster.
        "kubectl": (
            'case "$*" in *"create secret"*) '
            f'exec {kubectl} "$@" --dry-run=client -o json >"{made}/$$.json" ;; esac'
        ),
        "aws": (
            f'[ "$*" = "ecr get-login-password --region eu-west-1" ] || exit 99\necho {ECR_TOKEN}'
        ),
    }
    env = {
        "AWS_REGION": "eu-west-1",
        "DEV_IMAGE": DEV_IMAGE,
        "KUBECONFIG": str(tmp_path / "no-kubeconfig"),
    }
    proc = run_step(secrets_step(), tmp_path, env, stand_ins)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    secrets = {}
    for path in made.glob("*.json"):
        secret = json.loads(path.read_text())
        secrets[secret["metadata"]["name"]] = secret
    return proc.returncode, proc.stdout + proc.stderr, calls, secrets


def data(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_the_e2e_secrets_are_made_from_files_with_no_value_on_a_command_line(tmp_path: Path):
    code, out, calls, secrets = run_secrets_step(tmp_path)
    assert code == 0, out
    assert set(secrets) == {"comments-db-credentials", "comments-api", "comments-redis", "ecr"}
    assert {s["metadata"]["namespace"] for s in secrets.values()} == {"comments-staging"}

    db = data(secrets["comments-db-credentials"])
    assert secrets["comments-db-credentials"]["type"] == "kubernetes.io/basic-auth"
    assert db["username"] == "app"
    assert re.fullmatch(r"[0-9a-f]{48}", db["password"]), db
    api = data(secrets["comments-api"])
    assert api["database-url"] == (
        f"postgresql+psycopg://app:{db['password']}@comments-db-rw:5432/app"
    )
    assert re.fullmatch(r"[0-9a-f]{64}", api["client-ip-hash-salt"]), api
    redis = data(secrets["comments-redis"])
    redis_password = redis["redis.conf"].removeprefix("requirepass ")
    assert re.fullmatch(r"[0-9a-f]{48}", redis_password), redis
    assert redis["url"] == f"redis://:{redis_password}@comments-redis:6379/0"
    # What `create secret docker-registry --docker-*` made: the kubelet pulls with it.
    assert secrets["ecr"]["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(data(secrets["ecr"])[".dockerconfigjson"])
    assert config == {
        "auths": {
            REGISTRY_HOST: {
                "username": "AWS",
                "password": ECR_TOKEN,
                "auth": base64.b64encode(f"AWS:{ECR_TOKEN}".encode()).decode(),
            }
        }
    }

    values = [
        db["password"],
        api["client-ip-hash-salt"],
        redis_password,
        ECR_TOKEN,
        config["auths"][REGISTRY_HOST]["auth"],
    ]
    kubectl_calls = [c for c in calls if c.startswith("kubectl ")]
    assert len(kubectl_calls) >= 4, calls
    for call in kubectl_calls:
        for value in values:
            assert value not in call, f"a secret value on kubectl's command line: {call}"
    # The token is masked in the log, and printed nowhere else.
    assert out.count(ECR_TOKEN) == 1, out
    assert f"::add-mask::{ECR_TOKEN}" in out


def test_no_ecr_token_stops_the_step_before_any_pull_secret(tmp_path: Path):
    tool("kubectl")
    made = tmp_path / "secrets"
    made.mkdir(parents=True)
    proc = run_step(
        secrets_step(),
        tmp_path,
        {"AWS_REGION": "eu-west-1", "DEV_IMAGE": DEV_IMAGE},
        {"kubectl": "exit 0", "aws": "exit 0"},  # aws says nothing, and exits 0
    )
    calls = (tmp_path / "calls.log").read_text()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "::error::aws ecr get-login-password gave no token" in proc.stdout
    assert "docker-registry" not in calls
