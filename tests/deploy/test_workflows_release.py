"""main.yml's release steps that read the production Deployment, run with the real
`kubectl` against a stand-in API server on 127.0.0.1 (no control plane can run here).

The rollback decides from two reads: the image recorded before the apply (the rollback
target) and the image the Deployment runs when the release fails. A stand-in `kubectl`
script cannot tell what the real client does with `--ignore-not-found`, a 403 or a 500;
these tests ask the real client."""

from __future__ import annotations

import json
import re
import shutil
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, tool
from .test_tools import (
    OLDER,
    PROD_IMAGE,
    RELEASE,
    RELEASE_DIGEST,
    WORKFLOWS,
    release_step,
    run_step,
)

pytestmark = pytest.mark.k8s

NS = "comments-production"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/comments-api"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps/"
MIGRATE_JOB = f"/apis/batch/v1/namespaces/{NS}/jobs/comments-api-migrate"
APP = "comments-api"


@dataclass
class Cluster:
    """What the stand-in API server answers for the Deployment: its app image, or an
    HTTP error code (404: there is none)."""

    image: str = ""
    error: int = 0
    requests: list[str] = field(default_factory=list)
    # The ConfigMaps the namespace holds (their names), and the DELETEs it was sent.
    configmaps: set[str] = field(default_factory=set)
    deleted: list[str] = field(default_factory=list)


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


# The discovery documents kubectl reads before it can resolve `deployment`.
DISCOVERY: dict[str, dict[str, Any]] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "configmaps",
                "singularName": "configmap",
                "namespaced": True,
                "kind": "ConfigMap",
                "verbs": ["get", "list"],
                "shortNames": ["cm"],
            }
        ],
    },
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
            },
            {
                "name": "batch",
                "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
                "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"},
            },
        ],
    },
    "/apis/batch/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "batch/v1",
        "resources": [
            {
                "name": "jobs",
                "singularName": "job",
                "namespaced": True,
                "kind": "Job",
                "verbs": ["get", "delete"],
            }
        ],
    },
    "/apis/apps/v1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "apps/v1",
        "resources": [
            {
                "name": "deployments",
                "singularName": "deployment",
                "namespaced": True,
                "kind": "Deployment",
                "verbs": ["get", "list", "patch"],
                "shortNames": ["deploy"],
            }
        ],
    },
    "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
}


def handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            cluster.requests.append(path)
            if path in DISCOVERY:
                return self.answer(200, DISCOVERY[path])
            if path.startswith(CONFIGMAPS):
                name = path.removeprefix(CONFIGMAPS)
                if name in cluster.configmaps:
                    return self.answer(
                        200,
                        {
                            "kind": "ConfigMap",
                            "apiVersion": "v1",
                            "metadata": {"name": name, "namespace": NS},
                        },
                    )
                return self.answer(404, status(404, "NotFound", f'configmaps "{name}" not found'))
            if path != DEPLOYMENT:
                return self.answer(404, status(404, "NotFound", f"{path} not found"))
            if cluster.error == 404:
                return self.answer(
                    404, status(404, "NotFound", 'deployments.apps "comments-api" not found')
                )
            if cluster.error:
                return self.answer(
                    cluster.error,
                    status(
                        cluster.error,
                        "Forbidden" if cluster.error == 403 else "InternalError",
                        "the stand-in API server says no",
                    ),
                )
            return self.answer(
                200,
                {
                    "kind": "Deployment",
                    "apiVersion": "apps/v1",
                    "metadata": {"name": "comments-api", "namespace": NS},
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": "app", "image": cluster.image},
                                    {"name": "sidecar", "image": "busybox:1.37"},
                                ]
                            }
                        }
                    },
                },
            )

        def do_DELETE(self) -> None:
            path = self.path.split("?")[0]
            cluster.deleted.append(path)
            self.answer(404, status(404, "NotFound", f"{path} not found"))

    return Handler


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, str]]]:
    """A stand-in API server on 127.0.0.1 and the environment that points the real
    kubectl at it (its own HOME, so kubectl's discovery cache stays in tmp_path)."""
    state = Cluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "stand-in",
                "clusters": [
                    {
                        "name": "stand-in",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"},
                    }
                ],
                "contexts": [
                    {"name": "stand-in", "context": {"cluster": "stand-in", "user": "ci"}}
                ],
                "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
            }
        )
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {"KUBECONFIG": str(kubeconfig), "HOME": str(home), "NS": NS}
    try:
        yield state, env
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def remember(tmp_path: Path, env: dict[str, str]) -> tuple[int, str]:
    tool("kubectl")
    proc = run_step(release_step('> "$RUNNER_TEMP/previous-image"'), tmp_path, env)
    target = tmp_path / "previous-image"
    return proc.returncode, target.read_text() if target.exists() else "<no file>"


def test_rollback_target_is_the_running_app_image(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    state, env = cluster
    state.image = OLDER
    code, target = remember(tmp_path, env)
    assert code == 0
    assert target == OLDER, "the app container's image, not the sidecar's"
    assert DEPLOYMENT in state.requests


def test_rollback_target_is_empty_only_without_a_deployment(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    state, env = cluster
    state.error = 404
    code, target = remember(tmp_path, env)
    assert (code, target) == (0, ""), "the first release: nothing to go back to"


@pytest.mark.parametrize("error", [403, 500])
def test_rollback_target_unreadable_stops_the_job(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path, error: int
) -> None:
    """Swallowed (`|| true`), an empty target would pass for "first release" and disarm
    the rollback's re-run guard: undo would then drop a release the job did not change."""
    state, env = cluster
    state.error = error
    code, _ = remember(tmp_path, env)
    assert code != 0
    assert DEPLOYMENT in state.requests


def rollback(tmp_path: Path, env: dict[str, str], previous: str) -> tuple[int, str]:
    """The rollback step with the real kubectl. Only the paths that read the Deployment
    and stop are run this way: `rollout undo` and `rollout status` need a real cluster
    (test_tools.py runs those paths with a stand-in)."""
    tool("kubectl")
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "previous-image").write_text(previous)
    proc = run_step(
        release_step("rollout undo"),
        tmp_path,
        {**env, "PROD_IMAGE": PROD_IMAGE, "DIGEST": RELEASE_DIGEST, "JOB_STATUS": "failure"},
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("previous", "running", "said"),
    [
        # The apply was refused, or cancelled before it reached the Deployment.
        (OLDER, OLDER, "failed before the Deployment took it"),
        # A re-run of the release production already ran.
        (RELEASE, RELEASE, "ran sha256:" + "ab" * 32 + " before this job"),
        # The first release.
        ("", RELEASE, "no earlier one to go back to: act now"),
    ],
)
def test_rollback_undoes_nothing_the_job_did_not_change(
    cluster: tuple[Cluster, dict[str, str]],
    tmp_path: Path,
    previous: str,
    running: str,
    said: str,
) -> None:
    state, env = cluster
    state.image = running
    code, out = rollback(tmp_path, env, previous)
    assert code == 1
    assert said in out
    # It read the Deployment once and stopped: `rollout undo` reads it again (and the
    # server logs every GET; it answers no PATCH).
    assert state.requests.count(DEPLOYMENT) == 1, state.requests


def test_rollback_with_the_deployment_unreadable_says_act_now(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    state, env = cluster
    state.error = 403
    code, out = rollback(tmp_path, env, OLDER)
    assert code == 1
    assert "cannot be read: act now" in out


# `kustomize edit set image NAME=NEWNAME@DIGEST` as kustomize does it (its
# commands/edit/set/setimage.go): the `images:` entry named NAME is replaced by {name,
# newName, digest}, or added when there is none (an entry matching no image is no error),
# and the list is sorted by name. No standalone kustomize is installed here; `kubectl
# kustomize` (the real one) then renders what the edit left.
KUSTOMIZE_EDIT = """
import sys, yaml

args = sys.argv[1:]
assert args[:3] == ["edit", "set", "image"], f"only `edit set image` is stood in for: {args}"
with open("kustomization.yaml") as f:
    doc = yaml.safe_load(f)
images = {image["name"]: image for image in doc.get("images") or []}
for arg in args[3:]:
    name, _, new = arg.partition("=")
    new_name, _, digest = new.partition("@")
    assert name and new_name and digest, f"only NAME=NEWNAME@DIGEST is stood in for: {arg}"
    images[name] = {"name": name, "newName": new_name, "digest": digest}
doc["images"] = sorted(images.values(), key=lambda image: image["name"])
with open("kustomization.yaml", "w") as f:
    yaml.safe_dump(doc, f, sort_keys=False)
"""


def checkout(tmp_path: Path) -> Path:
    """A copy of deploy/k8s where the step's `kustomize edit` may write (in the runner it
    edits the job's own checkout)."""
    copy = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "deploy" / "k8s",
        copy / "deploy" / "k8s",
        ignore=shutil.ignore_patterns("node_modules"),
    )
    program = tmp_path / "kustomize_edit.py"
    program.write_text(KUSTOMIZE_EDIT)
    return copy


def release(
    tmp_path: Path, env: dict[str, str], overlay: str = "production-aws"
) -> tuple[int, str]:
    """The migrate-and-roll-out step up to its apply, on a copy of the checkout: the
    `kustomize edit` of the step (KUSTOMIZE_EDIT), the real kubectl rendering `overlay`
    (production-aws mounts the operator's ConfigMap rds-ca-bundle) and asking the
    stand-in API server. The rendered manifest is left in tmp_path/production.yaml."""
    tool("kubectl")
    tool("jq")
    tree = checkout(tmp_path)
    proc = run_step(
        release_step("kubectl apply"),
        tmp_path,
        {**env, "OVERLAY": overlay, "PROD_IMAGE": PROD_IMAGE, "DIGEST": RELEASE_DIGEST},
        {"kustomize": f'exec {sys.executable} {tmp_path / "kustomize_edit.py"} "$@"'},
        cwd=tree,
    )
    github_env = tmp_path / "github-env"
    return proc.returncode, proc.stdout + proc.stderr + (
        github_env.read_text() if github_env.exists() else ""
    )


def app_images(manifest: Path) -> dict[str, str]:
    """kind/name/container -> image of every container of the app's workloads (the
    Deployment and the migration Job; not Redis)."""
    images = {}
    for doc in filter(None, yaml.safe_load_all(manifest.read_text())):
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] in ("Deployment", "Job") and labels.get("app.kubernetes.io/name") == APP:
            pod = doc["spec"]["template"]["spec"]
            for container in pod.get("initContainers", []) + pod["containers"]:
                key = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
                images[key] = container["image"]
    return images


@pytest.mark.parametrize("overlay", ["production", "production-aws"])
def test_release_renders_the_promoted_digest_for_every_overlay(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path, overlay: str
) -> None:
    """production-aws includes production, which has already renamed the image to its
    registry by the time production-aws's own `images:` would apply: the step's edit in
    production-aws matched nothing, the manifest kept production's placeholder digest,
    and every production-aws release failed at the image check, with no message. Run
    with kustomize's edit semantics and the real `kubectl kustomize`."""
    state, env = cluster
    state.configmaps.add("rds-ca-bundle")
    code, out = release(tmp_path, env, overlay)
    manifest = tmp_path / "production.yaml"
    assert manifest.exists(), out
    images = app_images(manifest)
    assert {"Deployment/comments-api/app", "Job/comments-api-migrate/migrate"} <= set(images), (
        images
    )
    assert set(images.values()) == {RELEASE}, images
    assert "does not render" not in out
    # Past the image check: the old Job deleted, APPLIED written (the stand-in server then
    # refuses the apply).
    assert state.deleted == [MIGRATE_JOB], out
    assert "APPLIED=true" in out
    # And the production overlay of the checkout now names the release: the one edit
    # reaches both overlays.
    kustomization = yaml.safe_load(
        (tmp_path / "checkout/deploy/k8s/overlays/production/kustomization.yaml").read_text()
    )
    assert {"name": "comments-api", "newName": PROD_IMAGE, "digest": RELEASE_DIGEST} in (
        kustomization["images"]
    )
    assert code != 0


def test_release_that_renders_another_image_stops_and_says_so(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    """An edit that pins nothing (here: a kustomize that does nothing) must stop the step
    before production changes, with an error the run's summary shows (it failed on a bare
    `grep -q`)."""
    state, env = cluster
    tool("kubectl")
    tree = checkout(tmp_path)
    proc = run_step(
        release_step("kubectl apply"),
        tmp_path,
        {**env, "OVERLAY": "production", "PROD_IMAGE": PROD_IMAGE, "DIGEST": RELEASE_DIGEST},
        {"kustomize": ""},
        cwd=tree,
    )
    assert proc.returncode == 1
    assert f"::error::the production overlay does not render {RELEASE}" in proc.stdout
    assert state.deleted == []
    assert not (tmp_path / "github-env").exists()


def test_release_stops_when_the_configmaps_it_mounts_cannot_be_listed(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    """`needed=$(kubectl annotate ... | jq ...)`: under the runner's default `bash -e`
    (no pipefail) a failing kubectl left jq an empty input, `needed` empty, and the check
    passed; the release then met the missing ConfigMap at the Job wait (600 s) and rolled
    back. The workflows run their steps with `shell: bash` (-eo pipefail)."""
    state, env = cluster
    real = tool("kubectl")
    kubectl = f"""
case " $* " in
  *" annotate "*) echo "error: unable to decode the manifest" >&2; exit 1 ;;
esac
exec {real} "$@"
"""
    tree = checkout(tmp_path)
    proc = run_step(
        release_step("kubectl apply"),
        tmp_path,
        {**env, "OVERLAY": "production", "PROD_IMAGE": PROD_IMAGE, "DIGEST": RELEASE_DIGEST},
        {
            "kustomize": f'exec {sys.executable} {tmp_path / "kustomize_edit.py"} "$@"',
            "kubectl": kubectl,
        },
        cwd=tree,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "::error::could not list the ConfigMaps the production manifest mounts" in out
    assert state.deleted == [], "the previous release's Job is left alone"
    assert not (tmp_path / "github-env").exists(), "APPLIED is not written"
    assert "delete job" not in (tmp_path / "calls.log").read_text()


def test_release_stops_before_the_apply_without_the_configmaps_it_mounts(
    cluster: tuple[Cluster, dict[str, str]], tmp_path: Path
) -> None:
    """Without rds-ca-bundle the migration Job's pod never starts: the release failed at
    the Job wait (600 s) and rolled back. Checked before production changes, naming it;
    the overlay's generated comments-api-config-* is its own and not asked for."""
    state, env = cluster
    code, out = release(tmp_path / "missing", env)
    assert code == 1
    assert f"::error::ConfigMap {NS}/rds-ca-bundle is missing" in out
    assert "scripts/provision-k8s.sh --rds-ca-bundle FILE" in out
    assert "APPLIED=true" not in out
    assert state.deleted == [], "the previous release's Job is left alone"
    assert [r for r in state.requests if r.startswith(CONFIGMAPS)] == [CONFIGMAPS + "rds-ca-bundle"]
    # With it there, the step goes on: the old Job deleted, APPLIED written (the stand-in
    # server then refuses the apply).
    state.configmaps.add("rds-ca-bundle")
    code, out = release(tmp_path / "present", env)
    assert "::error::ConfigMap" not in out
    assert state.deleted == [MIGRATE_JOB]
    assert "APPLIED=true" in out


# --- Renovate keeps the tool versions the workflows pin -------------------------------


def renovate_regex(pattern: str) -> re.Pattern[str]:
    """A regex of renovate.json, compiled by Python. Renovate runs them with RE2 (or
    JavaScript's engine): named groups are written `(?<name>`, Python's `(?P<name>`; the
    rest must stay in what all three read alike (RE2 has no lookaround)."""
    assert not re.search(r"\(\?<[=!]|\(\?[=!]", pattern), f"lookaround, not in RE2: {pattern}"
    return re.compile(pattern.replace("(?<", "(?P<"))


def file_pattern(pattern: str) -> re.Pattern[str]:
    assert pattern.startswith("/"), f"not a /regex/: {pattern}"
    assert pattern.endswith("/"), f"not a /regex/: {pattern}"
    return renovate_regex(pattern[1:-1])


def test_renovate_updates_every_version_pin_of_the_workflows() -> None:
    """A `version:` input pins a tool an action would otherwise install at its latest
    (setup-crane): pinned and never bumped, it ages silently. Each is the currentValue of
    a regex manager of renovate.json, and crane's comes from go-containerregistry's
    releases."""
    config = json.loads((ROOT / "renovate.json").read_text())
    managers = [m for m in config["customManagers"] if m["customType"] == "regex"]
    pins = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        relative = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for pin in re.finditer(r"(?m)^\s+version: (\S+)$", text):
            pins += 1
            covering = [
                (manager, found)
                for manager in managers
                if any(file_pattern(p).search(relative) for p in manager["managerFilePatterns"])
                for string in manager["matchStrings"]
                for found in renovate_regex(string).finditer(text)
                if found.span("currentValue") == pin.span(1)
            ]
            assert covering, f"{relative}: `{pin.group(0).strip()}` has no Renovate manager"
            for manager, found in covering:
                step = found.group(0)
                # The match stays within the step it names: the `uses:` line it starts
                # at, then that step's lines only.
                assert step.startswith("uses: "), step
                assert "\n      - " not in step, f"the match runs into the next step: {step}"
                if step.startswith("uses: imjasonh/setup-crane@"):
                    assert manager["datasourceTemplate"] == "github-releases"
                    assert manager["depNameTemplate"] == "google/go-containerregistry"
    assert pins >= 1, "main.yml pins crane with `version:`"
