"""The by-hand procedures of the docs, run as written: the deploy of a chosen digest to
staging or production and the rollback to a chosen release (docs/deployment.md), and the
rotation of the HS256 secret on Kubernetes (docs/security.md).

No control plane runs here, so `kubectl` is a stand-in that records its calls and renders
what `apply -k` would send with the real `kubectl kustomize`; `kustomize edit set image`
is stood in for with kustomize's edit semantics (test_workflows_release.checkout).
What a real cluster does with those calls is not checked (docs/deployment.md says so)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import NAMESPACES, ROOT, one, render, tool
from .test_workflows_release import checkout

pytestmark = pytest.mark.k8s

DOC = ROOT / "docs" / "deployment.md"
DIGEST = "sha256:" + "ab" * 32
IMAGES = {  # the registry each environment pulls from (the overlays' newName)
    "staging": "registry.example.com/dev/comments-api",
    "production": "registry.example.com/prod/comments-api",
    "production-aws": "registry.example.com/prod/comments-api",
}
# How the docs name the image to fill in: the by-hand deploy's placeholder(s).
PLACEHOLDER = re.compile(r"<(?:PROD_|DEV_)?IMAGE>@sha256:<digest>")


def section(title: str) -> str:
    text = DOC.read_text()
    (body,) = re.findall(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    return body


def shell_blocks(body: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", body, re.S)


# kubectl stand-in: one line per call in $CALLS; `apply -k DIR` also leaves the rendering
# of DIR (what the real client would send) in $APPLIED/N.yaml.
KUBECTL = """#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$CALLS"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [ "${args[i]}" = apply ] && [ "${args[i+1]:-}" = -k ]; then
    n=$(ls "$APPLIED" | wc -l)
    exec "$REAL_KUBECTL" kustomize "${args[i+2]}" >"$APPLIED/$n.yaml"
  fi
done
"""


def run_procedure(script: str, tmp_path: Path) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """``script`` in a copy of deploy/k8s with the stand-ins: the kubectl calls, and what
    each `apply -k` rendered."""
    tree = checkout(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL)
    (bin_dir / "kustomize").write_text(
        f'#!/bin/sh\nexec {sys.executable} {tmp_path / "kustomize_edit.py"} "$@"\n'
    )
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    applied = tmp_path / "applied"
    applied.mkdir()
    calls = tmp_path / "calls.log"
    calls.touch()
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", script],
        cwd=tree,
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "CALLS": str(calls),
            "APPLIED": str(applied),
            "REAL_KUBECTL": tool("kubectl"),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    renders = [
        [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(applied.iterdir(), key=lambda p: int(p.stem))
    ]
    return calls.read_text().splitlines(), renders


def namespace_of(call: str) -> str | None:
    found = re.search(r"(?:^| )(?:-n|--namespace)[ =](\S+)", call)
    return found.group(1) if found else None


@pytest.mark.parametrize("overlay", ["staging", "production", "production-aws"])
def test_the_by_hand_deploy_pins_and_applies_the_same_environment(
    overlay: str, tmp_path: Path
) -> None:
    """The by-hand deploy ("Staging and production by hand"), filled in for one
    environment, deploys the digest given to that environment's overlay and waits in its
    namespace. The script
    pinned the image in overlays/production whatever the environment, so staging was
    applied with its placeholder digest (sha256:000…): its new pods and the migration Job
    in ImagePullBackOff, the Job's wait failing after 600 s."""
    (script,) = shell_blocks(section("Staging and production by hand"))
    ns = NAMESPACES[overlay]
    image = f"{IMAGES[overlay]}@{DIGEST}"
    # Filled in as an operator would: the image, and the lines that choose the environment.
    script = PLACEHOLDER.sub(image, script)
    assert "<" not in script.replace("<(", ""), f"a placeholder is left:\n{script}"
    script = re.sub(r"^overlay=\S+", f"overlay={overlay}", script, flags=re.M)
    script = re.sub(r"^ns=\S+", f"ns={ns}", script, flags=re.M)

    calls, renders = run_procedure(script, tmp_path)

    assert len(renders) == 1, calls
    (docs,) = renders
    workloads = [
        (d["kind"], c["image"])
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "comments-api"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert {kind for kind, _ in workloads} == {"Deployment", "Job"}, workloads
    assert {img for _, img in workloads} == {image}, f"{overlay} applied {workloads}"
    namespaces = {d["metadata"]["namespace"] for d in docs if "namespace" in d["metadata"]}
    assert namespaces == {ns}, namespaces
    # The Job deleted and waited for, and the rollout watched, where the overlay applied.
    waits = [c for c in calls if "apply" not in c.split()]
    assert {namespace_of(c) for c in waits} == {ns}, waits
    assert any("delete job comments-api-migrate" in c for c in waits), calls
    assert any("job/comments-api-migrate" in c and "wait" in c for c in waits), calls
    assert any("rollout status deployment/comments-api" in c for c in waits), calls


def test_rollback_to_a_chosen_release_runs_no_migration_job(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The rollback to a chosen release was "the by-hand deploy with that release's
    digest": its migration Job runs `comments-api migrate` with the OLDER image, which
    refuses a schema a newer release migrated ("… a newer comments-api migrated it; use
    that version", exit 1: tests/test_cli.py), so the Job retried for its 600 s and the
    documented wait failed, after the Deployment had changed. The procedure must change
    the Deployment only, by revision or by digest, and name its real container."""
    blocks = shell_blocks(section("Rollback"))
    assert blocks, "docs/deployment.md, Rollback: no commands for a chosen release"
    script = "\n".join(blocks)
    assert "job" not in script.lower(), script
    assert "apply" not in script.split(), script
    # The container the rollback sets exists in every overlay production may run.
    set_image = re.findall(r"set image deployment/comments-api (\w[\w-]*)=(\S+)", script)
    assert set_image, script
    for overlay in ("production", "production-aws"):
        deploy = one(rendered[overlay], "Deployment", "comments-api")
        names = {c["name"] for c in deploy["spec"]["template"]["spec"]["containers"]}
        assert {name for name, _ in set_image} <= names, (overlay, set_image, names)
    assert all(PLACEHOLDER.fullmatch(ref) for _, ref in set_image), set_image
    # A bare `rollout undo` after main.yml's own rollback goes FORWARD to the failed
    # release (the revision before the current one): the chosen revision is named.
    for undo in re.findall(r"rollout undo[^\n]*", script):
        assert "--to-revision=" in undo, undo
    filled = PLACEHOLDER.sub(f"{IMAGES['production']}@{DIGEST}", script).replace("<N>", "7")
    calls, renders = run_procedure(filled, tmp_path)
    assert renders == [], "the rollback applied an overlay (and so the migration Job)"
    assert calls, script
    assert {namespace_of(c) for c in calls} == {NAMESPACES["production"]}, calls
    assert any(c.endswith(f"app={IMAGES['production']}@{DIGEST}") for c in calls), calls


def test_an_older_release_migrate_refuses_the_newer_schema(tmp_path: Path) -> None:
    """Why the rollback runs no Job: the real CLI on a database a newer release migrated
    (its revision unknown to this code) exits 1 and migrates nothing."""
    db = tmp_path / "c.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}
    cli = [sys.executable, "-c", "from comments_api.cli import main; main()"]
    first = subprocess.run([*cli, "migrate"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    again = subprocess.run([*cli, "migrate"], env=env, capture_output=True, text=True)
    assert again.returncode == 1
    assert "a newer comments-api migrated it" in again.stderr
    # The Job the by-hand deploy and main.yml run is exactly that command.
    job = one(
        render(ROOT / "deploy" / "k8s" / "overlays" / "production"), "Job", "comments-api-migrate"
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


# --- rotating the HS256 secret on Kubernetes (docs/security.md) ---------------------------

SECURITY = ROOT / "docs" / "security.md"
SECRETS_DIR = "/run/secrets/comments-api"
ISSUER, AUDIENCE = "https://login.example", "comments"

# kubectl stand-in keeping what the rotation changes: the Secret's keys and the app
# container's env. After every call, the state a pod starting at that moment would get
# is appended to $STATES (one JSON document a line), with the call.
ROTATION_KUBECTL = """
import base64, json, os, sys

args = sys.argv[1:]
with open(os.environ["STATE"]) as f:
    state = json.load(f)
words = [a for a in args if not a.startswith("-n") and a != os.environ["NS"]]


def option(name):
    for a in args:
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


if words[:3] == ["patch", "secret", "comments-api"]:
    with open(option("--patch-file")) as f:
        patch = json.load(f)
    if option("--type") == "merge":
        state["secret"].update(patch.get("stringData", {}))
        for key, value in patch.get("data", {}).items():
            state["secret"][key] = base64.b64decode(value).decode()
    elif option("--type") == "json":
        for op in patch:
            key = op["path"].removeprefix("/data/")
            if op["op"] == "remove":
                if key not in state["secret"]:
                    sys.exit(f"no key {key} to remove")
                del state["secret"][key]
            else:
                state["secret"][key] = base64.b64decode(op["value"]).decode()
    else:
        sys.exit(f"patch type not stood in for: {args}")
elif words[:3] == ["set", "env", "deployment/comments-api"]:
    assert "-c" in args and args[args.index("-c") + 1] == "app", args
    for item in words[3:]:
        if item in ("-c", "app"):
            continue
        if item.endswith("-") and "=" not in item:
            state["env"].pop(item[:-1], None)
        else:
            name, _, value = item.partition("=")
            state["env"][name] = value
elif words[:2] == ["rollout", "status"] or words[:2] == ["get", "secret"]:
    pass
else:
    sys.exit(f"not stood in for: {args}")
with open(os.environ["STATE"], "w") as f:
    json.dump(state, f)
with open(os.environ["STATES"], "a") as f:
    f.write(json.dumps({"call": " ".join(words), **state}) + "\\n")
"""


def token(secret: str) -> str:
    import time

    import jwt

    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "reader", "iat": now, "exp": now + 600}
    return jwt.encode(claims, secret, algorithm="HS256")


def pod_start(state: dict[str, Any], where: Path) -> Any:
    """A pod starting with this Secret and pod template: the real settings and verifier,
    the Secret's keys as the kubelet writes them (files under the mount)."""
    from comments_api.identity.credentials import JwtVerifier
    from comments_api.settings import Settings

    where.mkdir(parents=True)
    for key, value in state["secret"].items():
        (where / key).write_text(value)
    env = {name: value.replace(SECRETS_DIR, str(where)) for name, value in state["env"].items()}
    return JwtVerifier(Settings.from_env(env))


def rotation_faults(script: str, old: str, tmp_path: Path) -> list[str]:
    """Run ``script`` against the stand-in, then start a pod at every step and say what
    went wrong: a pod that does not start, or one refusing a token the issuer may be
    signing (the old secret until every pod holds both, the new one from then on; tokens
    of the old one live until its variable is being removed)."""
    tmp_path.mkdir(parents=True)
    state = tmp_path / "state.json"
    states = tmp_path / "states.jsonl"
    state.write_text(
        json.dumps(
            {
                "secret": {"jwt-hs256-secret": old, "client-ip-hash-salt": "s" * 32},
                "env": {
                    "JWT_ISSUER": ISSUER,
                    "JWT_AUDIENCE": AUDIENCE,
                    "JWT_HS256_SECRET_FILE": f"{SECRETS_DIR}/jwt-hs256-secret",
                },
            }
        )
    )
    states.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl.py").write_text(ROTATION_KUBECTL)
    (bin_dir / "kubectl").write_text(
        f'#!/bin/sh\nexec {sys.executable} {bin_dir / "kubectl.py"} "$@"\n'
    )
    (bin_dir / "kubectl").chmod(0o755)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", script],
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "STATE": str(state),
            "STATES": str(states),
            "NS": NAMESPACES["production"],
            "OLD": old,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = [json.loads(line) for line in states.read_text().splitlines()]
    assert steps, "the procedure ran no kubectl command"
    final = steps[-1]["secret"]
    (new,) = {v for k, v in final.items() if k.startswith("jwt-hs256")} - {old}
    faults: list[str] = []
    both_everywhere = retiring = False
    for n, step in enumerate(steps):
        call = step["call"]
        if call.startswith("rollout status") and "JWT_HS256_PREVIOUS_SECRET_FILE" in step["env"]:
            both_everywhere = True
        if "JWT_HS256_PREVIOUS_SECRET_FILE-" in call:
            retiring = True
        signed = ({old} if not retiring else set()) | ({new} if both_everywhere else set())
        try:
            verifier = pod_start(step, tmp_path / f"pod{n}")
        except Exception as exc:  # the pod does not start: a SettingsError, for one
            faults.append(f"after `{call}` a pod does not start: {exc}")
            continue
        for secret in signed:
            try:
                verifier.verify(token(secret))
            except Exception as exc:
                which = "old" if secret == old else "new"
                faults.append(f"after `{call}` a new pod refuses the {which} secret's: {exc}")
    # Done: the old secret is gone from the Secret, and a pod refuses its tokens.
    if old in final.values():
        faults.append("the old secret is still in the Secret")
    with contextlib.suppress(Exception):
        pod_start(steps[-1], tmp_path / "pod-last").verify(token(old))
        faults.append("a pod still accepts the old secret's tokens at the end")
    return faults


def test_rotating_the_hs256_secret_on_kubernetes_never_refuses_a_live_token(
    tmp_path: Path,
) -> None:
    (section_text,) = re.findall(
        r"^### On Kubernetes\n(.*?)(?=^## )", SECURITY.read_text(), re.S | re.M
    )
    (script,) = shell_blocks(section_text)
    old = "o" * 64
    assert rotation_faults(script, old, tmp_path / "documented") == []
    # The check is not empty: replacing the value in place (the new secret under
    # jwt-hs256-secret, the old one under a second key, then the variable) leaves a pod
    # started in between with the new secret alone.
    in_place = """
    dir=/run/secrets/comments-api
    kubectl -n "$NS" patch secret comments-api --type=merge --patch-file=<(printf \\
      '{"stringData":{"jwt-hs256-secret":"%s","jwt-hs256-previous-secret":"%s"}}' \\
      "$(openssl rand -hex 32)" "$OLD")
    kubectl -n "$NS" set env deployment/comments-api -c app \\
      JWT_HS256_PREVIOUS_SECRET_FILE="$dir/jwt-hs256-previous-secret"
    kubectl -n "$NS" rollout status deployment/comments-api
    kubectl -n "$NS" patch secret comments-api --type=json \\
      --patch-file=<(printf '[{"op":"remove","path":"/data/jwt-hs256-previous-secret"}]')
    kubectl -n "$NS" set env deployment/comments-api -c app JWT_HS256_PREVIOUS_SECRET_FILE-
    """
    faults = rotation_faults(in_place, old, tmp_path / "in-place")
    assert any("refuses the old secret" in f for f in faults), faults
    assert any("does not start" in f for f in faults), faults
