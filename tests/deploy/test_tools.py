"""The real validators on the rendered overlays, the workflows and the scripts."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..support import ServiceProcess, free_port
from .conftest import (
    CUSTOM_KINDS,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    ROOT,
    find,
    is_builtin,
    one,
    pod_templates,
    secret_names,
    tool,
)

pytestmark = pytest.mark.k8s

MON = ROOT / "deploy" / "monitoring"
WORKFLOWS = ROOT / ".github" / "workflows"
VENV_BIN = ROOT / ".venv" / "bin"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def run(*cmd: str, ok: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    if ok:
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def venv_tool(name: str) -> str:
    return tool(str(VENV_BIN / name), name)


def checkov() -> str:
    return tool(os.environ.get("CHECKOV", "/opt/checkov-venv/bin/checkov"), "checkov")


def checkov_passes(framework: str, directory: Path) -> None:
    """checkov with the repository's config on ``directory``: some checks ran, none failed."""
    proc = run(
        checkov(),
        "--config-file",
        str(K8S / ".checkov.yaml"),
        "--framework",
        framework,
        "-d",
        str(directory),
        ok=False,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0", proc.stdout), proc.stdout[-2000:]


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# --- one source for the monitoring objects ------------------------------------------


def test_generated_files_are_current() -> None:
    run(str(VENV_BIN / "python"), str(K8S / "generate.py"), "--check")


def source_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted((MON / "rules").glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


@pytest.mark.parametrize("env", ["local", "production"])
def test_prometheus_rule_is_the_rule_files(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    rule = one(rendered[env], "PrometheusRule", "comments-api")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == source_groups()


def test_staging_has_no_production_alerts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # Staging is scraped under its own job name; production's alerts select job="comments-api".
    assert not find(rendered["staging"], "PrometheusRule")
    monitor = one(rendered["staging"], "ServiceMonitor", "comments-api")
    (relabel,) = monitor["spec"]["endpoints"][0]["relabelings"]
    assert relabel["targetLabel"] == "job"
    assert relabel["replacement"] != "comments-api"


def test_cluster_rules_pass_promtool(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """promtool accepts the rules as the cluster gets them (the alert unit tests run on the
    source files in tests/test_monitoring.py; the groups are equal, checked above)."""
    rules = tmp_path / "cluster-rules.yml"
    spec = one(rendered["production"], "PrometheusRule", "comments-api")["spec"]
    rules.write_text(yaml.safe_dump({"groups": spec["groups"]}, sort_keys=False))
    out = run(tool("promtool"), "check", "rules", str(rules)).stdout
    assert re.search(r"SUCCESS: [1-9]\d* rules found", out), out


@pytest.mark.parametrize("env", ["local", "production"])
def test_dashboards_are_the_generated_json(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    maps = [
        cm
        for cm in find(rendered[env], "ConfigMap")
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    sources = sorted((MON / "grafana" / "dashboards").glob("*.json"))
    assert len(maps) == len(sources) >= 2
    by_key = {key: value for cm in maps for key, value in cm["data"].items()}
    for src in sources:
        assert json.loads(by_key[src.name]) == json.loads(src.read_text()), src.name


# --- schemas ----------------------------------------------------------------------------


def validate_builtin(
    docs: list[dict[str, Any]], tmp_path: Path, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    path = write_docs(tmp_path / "builtin.yaml", docs)
    return run(
        venv_tool("kubernetes-validate"),
        "--strict",
        "--quiet",
        "-k",
        KUBERNETES_VERSION,
        str(path),
        ok=ok,
    )


def test_manifests_are_validated_against_the_kubernetes_version_clusters_run() -> None:
    """The schemas the manifests are checked against are those of the clusters we make:
    EKS's default in Terraform and minikube's in provision-k8s.sh."""
    minor = KUBERNETES_VERSION.rsplit(".", 1)[0]
    variables = (ROOT / "deploy/terraform/modules/cluster/variables.tf").read_text()
    block = re.search(r'^variable "kubernetes_version" \{\n(.*?)^\}', variables, re.M | re.S)
    assert block, "modules/cluster has no kubernetes_version variable"
    eks = re.search(r'^  default\s*=\s*"([^"]+)"', block.group(1), re.M)
    assert eks, "modules/cluster's kubernetes_version has no default"
    assert eks.group(1) == minor
    provision = (ROOT / "scripts/provision-k8s.sh").read_text()
    local = re.search(r"^KUBERNETES_VERSION=\$\{KUBERNETES_VERSION:-v([0-9.]+)\}", provision, re.M)
    assert local, "provision-k8s.sh sets no default KUBERNETES_VERSION"
    assert local.group(1).rsplit(".", 1)[0] == minor


@pytest.mark.parametrize("env", OVERLAYS)
def test_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]], env: str, tmp_path: Path
) -> None:
    builtin = [d for d in rendered[env] if is_builtin(d)]
    custom = {d["kind"] for d in rendered[env] if not is_builtin(d)}
    assert custom <= CUSTOM_KINDS, custom
    assert len(builtin) >= 15
    validate_builtin(builtin, tmp_path)


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_supported_kubernetes_range(
    rendered: dict[str, list[dict[str, Any]]], version: str, tmp_path: Path
) -> None:
    """The oldest minor with every field used on by default (preStop sleep, matchLabelKeys,
    unhealthyPodEvictionPolicy), and the newest schemas available."""
    builtin = [d for d in rendered["production"] if is_builtin(d)]
    path = write_docs(tmp_path / "builtin.yaml", builtin)
    run(venv_tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path))


def test_kubernetes_validate_rejects_unknown_fields(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    deploy = copy.deepcopy(one(rendered["production"], "Deployment", "comments-api"))
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    assert validate_builtin([deploy], tmp_path, ok=False).returncode != 0


def node_validate(
    objects: list[dict[str, Any]], ok: bool = True
) -> subprocess.CompletedProcess[str]:
    node = tool("node", "nodejs")
    validator = K8S / "validate"
    installed = validator / "node_modules" / "@kubernetes-models"
    if not all((installed / p).is_dir() for p in ("prometheus-operator", "external-secrets")):
        pytest.fail("run scripts/check-k8s.sh (npm ci in deploy/k8s/validate) first", pytrace=False)
    return run(node, "validate.mjs", input=json.dumps(objects), cwd=validator, ok=ok)


@pytest.mark.parametrize("env", OVERLAYS)
def test_prometheus_operator_objects_match_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]], env: str
) -> None:
    objects = [d for d in rendered[env] if d["apiVersion"] == "monitoring.coreos.com/v1"]
    assert objects
    out = node_validate(objects).stdout
    assert out.count("valid ") == len(objects), out


def test_external_secrets_objects_match_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = [d for d in rendered["production-aws"] if d["apiVersion"] == "external-secrets.io/v1"]
    assert {d["kind"] for d in objects} == {"SecretStore", "ExternalSecret"}
    out = node_validate(objects).stdout
    assert out.count("valid ") == len(objects), out
    broken = copy.deepcopy(one(objects, "ExternalSecret", "comments-api-database"))
    broken["spec"]["refreshInterval"] = 300  # must be a duration string
    proc = node_validate([broken], ok=False)
    assert "INVALID ExternalSecret/comments-api-database" in proc.stdout


def test_crd_schema_validation_can_fail(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitor = copy.deepcopy(one(rendered["production"], "ServiceMonitor", "comments-api"))
    monitor["spec"]["endpoints"][0]["interval"] = 15  # must be a duration string
    proc = node_validate([monitor], ok=False)
    assert proc.returncode == 1
    assert "INVALID ServiceMonitor/comments-api" in proc.stdout


# --- policy scans and linters -------------------------------------------------------------


def test_checkov_on_rendered_manifests(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    for env in OVERLAYS:
        write_docs(tmp_path / f"{env}.yaml", rendered[env])
    checkov_passes("kubernetes", tmp_path)


def test_checkov_on_workflows() -> None:
    checkov_passes("github_actions", WORKFLOWS)


def test_actionlint() -> None:
    run(venv_tool("actionlint"), *map(str, sorted(WORKFLOWS.glob("*.yml"))))


def test_zizmor_offline() -> None:
    run(venv_tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS))


def test_shellcheck() -> None:
    scripts = [
        ROOT / "scripts" / "provision-k8s.sh",
        ROOT / "scripts" / "k8s-local.sh",
        ROOT / "scripts" / "check-k8s.sh",
        K8S / "e2e" / "walkthrough.sh",
    ]
    run(venv_tool("shellcheck"), *map(str, scripts))


# --- provision-k8s.sh --dry-run ----------------------------------------------------------


def dry_run(
    tmp_path: Path, *args: str, script: str = "provision-k8s.sh"
) -> subprocess.CompletedProcess[str]:
    # A PATH without minikube, helm or kubectl: a dry run that tried to run one would fail.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("bash", "cat", "sed", "seq", "dirname", "printf"):
        target = tool(name)
        link = bin_dir / name
        if not link.exists():
            link.symlink_to(target)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return run(str(bin_dir / "bash"), str(ROOT / "scripts" / script), *args, env=env, ok=False)


def test_provision_dry_run_prints_every_step(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    text = "\n".join(commands)
    assert re.search(r"^minikube start -p comments --nodes 3 .*--cni calico", text, re.M)
    for addon in ("metrics-server", "ingress"):
        assert f"minikube addons enable {addon} -p comments" in commands
    for node, zone in (
        ("comments", "zone-a"),
        ("comments-m02", "zone-b"),
        ("comments-m03", "zone-c"),
    ):
        assert (
            f"kubectl --context comments label node {node} topology.kubernetes.io/zone={zone}"
            " --overwrite" in commands
        )
    releases = {
        m.group(1): line
        for line in commands
        if (m := re.match(r"helm --kube-context comments upgrade --install (\S+) ", line))
    }
    assert set(releases) == {
        "kube-prometheus-stack",
        "prometheus-adapter",
        "cert-manager",
        "cnpg",
        "plugin-barman-cloud",
    }
    order = list(releases)
    assert order.index("cert-manager") < order.index("plugin-barman-cloud")
    assert order.index("cnpg") < order.index("plugin-barman-cloud")
    for line in releases.values():
        assert re.search(r"--version v?\d+\.\d+\.\d+", line)
        assert "--wait" in line
        for values in re.findall(r"--values (\S+)", line):
            assert (ROOT / values).is_file(), values
    for env in ("local", "staging", "production"):
        assert (
            f"kubectl --context comments apply -f deploy/k8s/overlays/{env}/namespace.yaml"
            in commands
        )
    # Persistence for Prometheus, Alertmanager and Grafana; no default Grafana password.
    kps = yaml.safe_load((K8S / "provision" / "kube-prometheus-stack-values.yaml").read_text())
    assert kps["prometheus"]["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]
    assert kps["alertmanager"]["alertmanagerSpec"]["storage"]["volumeClaimTemplate"]
    assert kps["grafana"]["persistence"]["enabled"] is True
    assert kps["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    assert "<random" in proc.stdout
    assert not re.search(r"admin-password=[0-9a-f]{16}", proc.stdout)
    # Given to kubectl through a file descriptor: never on a command line (ps shows those).
    script = (ROOT / "scripts" / "provision-k8s.sh").read_text()
    assert "--from-file=admin-password=<(printf '%s' \"$grafana_password\")" in script
    assert "grafana_password=$(openssl rand -hex 24)" in script  # under set -e, unlike <(...)
    assert "--from-literal=admin-password" not in script
    # Deterministic: the same plan every time.
    assert dry_run(tmp_path, "--dry-run").stdout == proc.stdout


def test_local_deploy_dry_run(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, "--dry-run", script="k8s-local.sh")
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    order = [
        "make image IMAGE=comments-api:dev",
        "minikube image load comments-api:dev -p comments --overwrite",
        "kubectl --context comments -n comments-local delete job comments-api-migrate"
        " --ignore-not-found --wait=true",
        "kubectl --context comments apply -k deploy/k8s/overlays/local",
        "kubectl --context comments -n comments-local wait --for=condition=complete"
        " job/comments-api-migrate --timeout=600s",
        "kubectl --context comments -n comments-local rollout status deployment/comments-api"
        " --timeout=300s",
    ]
    positions = [commands.index(c) for c in order]
    assert positions == sorted(positions), "migrate before the rollout is awaited"
    secrets = [c for c in commands if "create secret" in c]
    assert len(secrets) == 3
    assert all("<random>" in c for c in secrets), "no secret value is ever printed"


KUBECTL_SECRETS = """#!/usr/bin/env python3
# A stand-in for kubectl and a cluster: Secrets are JSON files of base64 data in FAKE_STORE.
import base64, json, os, pathlib, sys
store = pathlib.Path(os.environ["FAKE_STORE"])
args = sys.argv[1:]
with open(store / "calls.log", "a") as log:
    log.write("kubectl " + " ".join(args) + "\\n")
if "apply" in args and "-" in args:
    sys.stdin.read()
if "secret" not in args:
    sys.exit(0)
name = args[args.index("generic") + 1] if "generic" in args else args[args.index("secret") + 1]
path = store / f"{name}.json"
if "create" in args:
    if path.exists():
        sys.exit(f'Error from server (AlreadyExists): secrets "{name}" already exists')
    data = {}
    for arg in args:
        if arg.startswith(("--from-literal=", "--from-file=")):
            kind, _, pair = arg.partition("=")
            key, _, value = pair.partition("=")
            raw = pathlib.Path(value).read_bytes() if kind == "--from-file" else value.encode()
            data[key] = base64.b64encode(raw).decode()
    path.write_text(json.dumps(data))
    sys.exit(0)
if not path.exists():
    if "--ignore-not-found" in args:  # kubectl get: an absent object is no error, no output
        sys.exit(0)
    sys.exit(f'Error from server (NotFound): secrets "{name}" not found')
if "name" in args and args[args.index("name") - 1] == "-o":
    print(f"secret/{name}")
for arg in args:
    if arg.startswith("jsonpath={.data."):
        print(json.loads(path.read_text()).get(arg[len("jsonpath={.data."):-1], ""), end="")
"""


def test_local_deploy_completes_secrets_a_stopped_run_left_half_made(tmp_path: Path) -> None:
    # A run stopped after creating comments-db-credentials but before comments-api: every
    # later run tried to create comments-db-credentials again and died on AlreadyExists.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL_SECRETS)
    for name in ("make", "minikube"):  # the image build and load are not what is tested
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for tool_ in bin_dir.iterdir():
        tool_.chmod(0o755)
    store = tmp_path / "secrets"
    store.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_STORE": str(store)}
    script = str(ROOT / "scripts" / "k8s-local.sh")

    def secret(name: str) -> dict[str, str]:
        data = json.loads((store / f"{name}.json").read_text())
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    (store / "comments-db-credentials.json").write_text(
        json.dumps({"username": "YXBw", "password": base64.b64encode(b"p0ss").decode()})
    )
    proc = run("bash", script, env=env, ok=False)
    assert proc.returncode == 0, proc.stderr
    assert secret("comments-api")["database-url"].startswith("postgresql+psycopg://app:p0ss@")
    # The other half missing: comments-db-credentials comes back with the URL's password.
    (store / "comments-db-credentials.json").unlink()
    proc = run("bash", script, env=env, ok=False)
    assert proc.returncode == 0, proc.stderr
    assert secret("comments-db-credentials")["password"] == "p0ss"
    # And once both exist, nothing is created again.
    before = (store / "calls.log").read_text().count("create secret")
    run("bash", script, env=env)
    assert (store / "calls.log").read_text().count("create secret") == before


KUBECTL_CLUSTER = """#!/usr/bin/env python3
# A stand-in for kubectl and a cluster that answers: Secrets are the names in FAKE_SECRETS,
# ConfigMaps (other than the deploy lock) those in FAKE_CONFIGMAPS (namespace/name);
# `kustomize` is the real kubectl's, of the overlay FAKE_OVERLAY_production names instead of
# production when set.
import os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write("kubectl " + " ".join(args) + "\\n")
if args[0] == "kustomize":
    instead = os.environ.get("FAKE_OVERLAY_production")
    if instead and args[1].endswith("/overlays/production"):
        args[1] = args[1].removesuffix("production") + instead
    os.execv(os.environ["REAL_KUBECTL"], ["kubectl", *args])
for kind, names in (("secret", "FAKE_SECRETS"), ("configmap", "FAKE_CONFIGMAPS")):
    name = args[args.index(kind) + 1] if kind in args else ""
    if names in os.environ and name and name != "comments-api-deploy-lock":
        ns = args[args.index("--namespace") + 1]
        sys.exit(0 if f"{ns}/{name}" in os.environ.get(names, "").split() else 1)
"""


def minikube_run(
    tmp_path: Path, secrets: list[str], configmaps: list[str] | None = None, production: str = ""
) -> tuple[subprocess.CompletedProcess[str], str]:
    """deploy.sh --target minikube against stand-ins: a cluster that answers, holding
    `secrets` (and `configmaps`; None: every ConfigMap it is asked for); docker, skopeo, gpg
    and curl succeed doing nothing. `production`: the overlay rendered for production.
    Returns the run and the commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "kubectl").write_text(KUBECTL_CLUSTER)
    for name in ("docker", "skopeo", "gpg", "curl"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >>"$FAKE_LOG"\n')
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_SECRETS": " ".join(secrets),
        "REAL_KUBECTL": tool("kubectl"),
        "FAKE_OVERLAY_production": production,
    }
    if configmaps is not None:
        env["FAKE_CONFIGMAPS"] = " ".join(configmaps)
    proc = run(
        "bash",
        str(ROOT / "scripts" / "deploy.sh"),
        "--target=minikube",
        "--skip-tests",
        "--skip-scans",
        "--image=comments-api:stand-in",
        f"--state-dir={tmp_path / 'state'}",
        env=env,
        ok=False,
    )
    return proc, log.read_text()


def test_minikube_target_names_missing_secrets_before_the_build(
    tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """Without its Secrets the migration Job's pod never starts: the run stopped only at
    the Job wait's timeout, after the tests, the build and the push, and rolled staging
    back. The preflight names every Secret the two overlays read, before anything runs."""
    proc, calls = minikube_run(tmp_path / "none", [])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "docker" not in calls, "nothing is built or pushed"
    missing = re.search(r"missing Secrets \(namespace/name\): ([^;]*);", proc.stderr)
    assert missing, proc.stderr[-2000:]
    expected = set()
    for env in ("staging", "production"):
        for _, pod in pod_templates(rendered[env]):
            expected |= {f"comments-{env}/{name}" for name in secret_names(pod)}
    # CloudNativePG's, which no pod template names.
    cluster = one(rendered["production"], "Cluster", "comments-db")["spec"]
    store = one(rendered["production"], "ObjectStore", "comments-db-backups")["spec"]
    for name in (
        cluster["bootstrap"]["initdb"]["secret"]["name"],
        store["configuration"]["s3Credentials"]["accessKeyId"]["name"],
    ):
        expected.add(f"comments-production/{name}")
    assert set(missing.group(1).split()) == expected
    # With all of them there, the run goes on to the build.
    proc, calls = minikube_run(tmp_path / "all", sorted(expected))
    assert "missing Secrets" not in proc.stderr
    assert "docker tag comments-api:stand-in" in calls


def test_minikube_target_names_missing_configmaps_before_the_build(tmp_path: Path) -> None:
    """production-aws mounts the operator's ConfigMap rds-ca-bundle (not optional): without
    it the migration Job's pod never starts, and the run stopped only at the Job wait's
    timeout. The preflight names the ConfigMaps an overlay reads and does not render (its
    generated comments-api-config-* is its own) and says how to make them. Production is
    rendered from production-aws here: the minikube overlays read none of the operator's."""
    proc, _ = minikube_run(tmp_path / "probe", [], production="production-aws")
    secrets = re.search(r"missing Secrets \(namespace/name\): ([^;]*);", proc.stderr)
    assert secrets, proc.stderr[-2000:]
    proc, calls = minikube_run(
        tmp_path / "none", secrets.group(1).split(), [], production="production-aws"
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "docker" not in calls, "nothing is built or pushed"
    assert "missing Secrets" not in proc.stderr
    missing = re.search(r"missing ConfigMaps \(namespace/name\): ([^;]*);", proc.stderr)
    assert missing, proc.stderr[-2000:]
    assert missing.group(1).split() == ["comments-production/rds-ca-bundle"]
    assert "RDS_CA_NAMESPACE=comments-production scripts/provision-k8s.sh --rds-ca-bundle FILE" in (
        proc.stderr
    )
    # With it there, the run goes on to the build.
    proc, calls = minikube_run(
        tmp_path / "all",
        secrets.group(1).split(),
        ["comments-production/rds-ca-bundle"],
        production="production-aws",
    )
    assert "missing ConfigMaps" not in proc.stderr
    assert "docker tag comments-api:stand-in" in calls


@pytest.mark.parametrize("script", ["provision-k8s.sh", "k8s-local.sh"])
def test_every_cluster_command_names_the_minikube_context(tmp_path: Path, script: str) -> None:
    # They used the kubectl context that happened to be current: run again after switching
    # to another cluster (say, production), they would label its nodes, install the charts
    # and apply the local overlay there.
    proc = dry_run(tmp_path, "--dry-run", script=script)
    assert proc.returncode == 0, proc.stderr
    commands = [line[2:] for line in proc.stdout.splitlines() if line.startswith("+ ")]
    cluster = [c for c in commands if re.match(r"(kubectl|helm) ", c) and " repo " not in c]
    assert len(cluster) >= 5
    for command in cluster:
        assert re.match(r"kubectl --context comments |helm --kube-context comments ", command), (
            command
        )
        for inner in re.findall(r"\$\((kubectl [^)]*)\)", command):
            assert inner.startswith("kubectl --context comments "), command
    # The commands they suggest to run next, too (k8s-local.sh's port-forward used the
    # current context).
    suggested = re.findall(r"\bkubectl (?!kustomize)\S.*", proc.stdout)
    assert suggested
    for command in suggested:
        assert command.startswith("kubectl --context comments "), command


def test_local_docs_commands_name_the_minikube_context() -> None:
    """docs/deployment.md, "Local": its try-it commands ran on whatever context was
    current, though the section promises the cluster commands never do."""
    text = (ROOT / "docs" / "deployment.md").read_text()
    local = text.split("## Local", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", local, re.S)
    commands = re.findall(r"\b(kubectl .*|minikube .*)", "".join(blocks))
    assert any(c.startswith("kubectl ") for c in commands)
    for command in commands:
        assert re.match(r"kubectl --context comments |minikube .*-p comments\b", command), command


def test_provision_rejects_unknown_arguments(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, "--dryrun")
    assert proc.returncode == 2
    assert "unknown argument" in proc.stderr


@pytest.mark.parametrize("script", ["provision-k8s.sh", "k8s-local.sh"])
def test_help_is_the_usage_text_only(tmp_path: Path, script: str) -> None:
    # It printed a fixed line range of the script: its comment markers and, as the last
    # line, `set -euo pipefail`; k8s-local.sh did not name the MINIKUBE_PROFILE it reads.
    proc = dry_run(tmp_path, "--help", script=script)
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run" in proc.stdout
    assert "set -euo pipefail" not in proc.stdout
    assert not [line for line in proc.stdout.splitlines() if line.startswith("#")], proc.stdout
    source = (ROOT / "scripts" / script).read_text()
    for name in re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", source):
        assert name in proc.stdout, f"{script} --help does not name {name}"


def test_deployment_docs_have_no_placeholder_and_name_real_commands() -> None:
    # "The local pipeline" section of docs/deployment.md was an HTML comment saying
    # "placeholder until it lands", long after scripts/deploy.sh had landed.
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert "placeholder until it lands" not in text
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    for section in sections:
        title, _, body = section.partition("\n")
        prose = re.sub(r"<!--.*?-->", "", body, flags=re.S).strip()
        assert prose, f"section '{title}' is empty"
    targets = set(re.findall(r"^([a-z][a-z0-9-]+):", (ROOT / "Makefile").read_text(), re.M))
    for doc in ("deployment.md", "pipeline.md"):
        for target in re.findall(r"\bmake ([a-z][a-z0-9-]+)", (ROOT / "docs" / doc).read_text()):
            assert target in targets, f"docs/{doc}: make {target} is no Makefile target"


# --- workflow policy ----------------------------------------------------------------------


def workflows() -> dict[str, dict[str, Any]]:
    flows = {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}
    for flow in flows.values():
        # YAML 1.1 reads the key `on` as the boolean true.
        if True in flow:
            flow["on"] = flow.pop(True)
    return flows


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


def test_workflow_hardening() -> None:
    flows = workflows()
    assert set(flows) >= {"dev.yml", "main.yml"}
    for name, flow in flows.items():
        assert flow["permissions"] == {"contents": "read"}, name
        for step in steps(flow):
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), (
                    f"{name}: {step['uses']} is not pinned to a commit"
                )
            # Expressions are passed through env:, never spliced into the shell script.
            assert "${{" not in step.get("run", ""), f"{name}: {step.get('name')}"
        text = (WORKFLOWS / name).read_text()
        for line in text.splitlines():
            if "uses:" in line and "@" in line:
                assert re.search(r"@[0-9a-f]{40} # v\d", line), (
                    f"{name}: version comment missing: {line}"
                )


def test_workflow_steps_run_with_pipefail() -> None:
    """Without a shell named, the runner starts a step with `bash -e`: a pipeline's status
    is its last command's, so `needed=$(kubectl annotate ... | jq ...)` in main.yml passed
    with an empty list when kubectl failed. `defaults.run.shell: bash` gives every step
    `-eo pipefail` (test_workflows_release runs that step with a failing kubectl)."""
    for name, flow in workflows().items():
        assert flow.get("defaults", {}).get("run", {}).get("shell") == "bash", name
        for job_id, job in flow["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    assert runner_shell(step) == RUNNER_SHELLS["bash"], (
                        f"{name}/{job_id}: {step.get('name')}"
                    )


def job_of(workflow: dict[str, Any], text: str) -> list[str]:
    """The ids of the jobs with a step whose run script holds `text`."""
    return [
        job_id
        for job_id, job in workflow["jobs"].items()
        if any(text in s.get("run", "") for s in job.get("steps", []))
    ]


def needs_of(workflow: dict[str, Any], job_id: str) -> set[str]:
    """Every job `job_id` waits for, directly or through others."""
    direct = workflow["jobs"][job_id].get("needs", [])
    direct = [direct] if isinstance(direct, str) else direct
    found = set(direct)
    for other in direct:
        found |= needs_of(workflow, other)
    return found


def commands(script: str, word: str) -> list[str]:
    """Each command of a run script that starts with `word`, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [m.group(0) for m in re.finditer(rf"(?m){re.escape(word)}\b.*$", joined)]


def release_step(text: str) -> dict[str, Any]:
    """The one step of main.yml's release job whose run script holds `text`."""
    (step,) = [
        s for s in workflows()["main.yml"]["jobs"]["release"]["steps"] if text in s.get("run", "")
    ]
    return step


# How GitHub's runner starts a run script on Linux, by the `shell` in force (the step's,
# else its job's `defaults.run.shell`, else the workflow's): no shell named is `bash -e
# {0}`, `shell: bash` is `bash --noprofile --norc -eo pipefail {0}` (docs: "Workflow
# syntax", `jobs.<job_id>.steps[*].shell`).
RUNNER_SHELLS: dict[str | None, list[str]] = {
    None: ["bash", "-e"],
    "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"],
}


def runner_shell(step: dict[str, Any]) -> list[str]:
    """The command the runner starts `step`'s script with, from the workflow that holds
    the step; a step found in no workflow gets the runner's default."""
    for flow in workflows().values():
        for job in flow["jobs"].values():
            if step in job.get("steps", []):
                shell = (
                    step.get("shell")
                    or job.get("defaults", {}).get("run", {}).get("shell")
                    or flow.get("defaults", {}).get("run", {}).get("shell")
                )
                assert shell in RUNNER_SHELLS, f"no stand-in for shell {shell!r}"
                return RUNNER_SHELLS[shell]
    return RUNNER_SHELLS[None]


def run_step(
    step: dict[str, Any],
    tmp_path: Path,
    env: dict[str, str],
    stand_ins: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """A step's run script, as GitHub's runner runs it (runner_shell: `bash -eo pipefail`
    under the workflows' `defaults.run.shell: bash`), with stand-ins for tools that need a
    cloud (no cluster or registry can be reached from here). Each stand-in logs its
    arguments to $CALLS. `cwd`: the checkout the step runs in (the repository if None)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (stand_ins or {}).items():
        (bin_dir / name).write_text(
            f'#!/bin/sh\nprintf \'%s %s\\n\' {name} "$*" >>"$CALLS"\n{body}\n'
        )
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    calls = tmp_path / "calls.log"
    calls.touch()
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RUNNER_TEMP": str(tmp_path),
        "CALLS": str(calls),
        "GITHUB_ENV": str(tmp_path / "github-env"),
        "GITHUB_OUTPUT": str(tmp_path / "github-output"),
        **env,
    }
    return run(*runner_shell(step), str(script), env=full_env, ok=False, cwd=cwd or ROOT)


def test_workflow_build_once_promote_the_digest() -> None:
    flows = workflows()
    builds = [
        (n, s)
        for n, f in flows.items()
        for s in steps(f)
        if s.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert [name for name, _ in builds] == ["dev.yml"], "exactly one image build, on dev"
    build = builds[0][1]["with"]
    assert build["sbom"] is True
    assert str(build["provenance"]).startswith("mode=max")
    assert build["push"] is True
    dev = flows["dev.yml"]
    assert dev["on"]["push"]["branches"] == ["dev"]
    assert dev["jobs"]["build"]["permissions"] == {"contents": "read", "id-token": "write"}
    assert any("cosign sign" in s.get("run", "") for s in steps(dev))
    e2e = "\n".join(s.get("run", "") for s in dev["jobs"]["e2e"]["steps"])
    assert "overlays/staging" in e2e
    assert "k6 run" in e2e
    assert "walkthrough.sh" in e2e
    assert any(
        s.get("uses", "").startswith("helm/kind-action@") for s in dev["jobs"]["e2e"]["steps"]
    )

    main = flows["main.yml"]
    assert main["on"]["push"]["branches"] == ["main"]
    runs = [s.get("run", "") for s in steps(main)]
    verify = next(i for i, r in enumerate(runs) if "cosign verify" in r)
    copy_ = next(i for i, r in enumerate(runs) if "crane copy" in r)
    assert verify < copy_, "the signature is verified before the copy"
    assert '"${DEV_IMAGE}@${DIGEST}"' in runs[copy_], "copied by digest"
    deploy = main["jobs"]["release"]
    assert deploy["environment"]["name"] == "production"
    rollback = [s for s in deploy["steps"] if "failure()" in str(s.get("if", ""))]
    assert rollback
    assert "rollout undo" in rollback[0]["run"]
    # Only after production was changed, or it would undo the release that was serving.
    assert "env.APPLIED == 'true'" in rollback[0]["if"]
    assert 'kustomize edit set image "comments-api=${PROD_IMAGE}@${DIGEST}"' in "\n".join(runs)


def test_workflow_signature_means_built_and_tested() -> None:
    """main.yml promotes whatever digest carries dev.yml's signature, so dev.yml signs only
    what passed its E2E run: an image whose E2E failed, or was cancelled by a newer push,
    must stay unsigned."""
    dev = workflows()["dev.yml"]
    signers = job_of(dev, "cosign sign")
    assert signers, "dev.yml signs the image"
    for job_id in signers:
        assert job_id not in ("build", "e2e"), f"{job_id} signs before the E2E run passed"
        assert {"build", "e2e"} <= needs_of(dev, job_id), f"{job_id} does not wait for the E2E"
        job = dev["jobs"][job_id]
        # success() is the default; anything else could sign after a failed E2E run.
        assert "if" not in job, f"{job_id}: {job.get('if')}"
        # The digest signed is the one the E2E run deployed: the build job's output.
        assert job["env"]["DIGEST"] == dev["jobs"]["e2e"]["env"]["DIGEST"]
        assert job["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
        # Nothing of the repository runs beside the signing token.
        assert not job_uses(job, "actions/checkout@"), job_id
    # The image this commit already has (a re-run: 49c7dfb), else the one just built.
    assert (
        dev["jobs"]["build"]["outputs"]["digest"]
        == "${{ steps.pushed.outputs.digest || steps.push.outputs.digest }}"
    )


def test_workflow_signature_checked_is_this_commits() -> None:
    """The signer's identity (dev.yml on refs/heads/dev) is the same for every dev commit:
    without the commit in the check, the tag of this commit could name an older signed
    digest and pass."""
    main = workflows()["main.yml"]
    verifies = 0
    for step in main["jobs"]["release"]["steps"]:
        for command in commands(step.get("run", ""), "cosign verify"):
            verifies += 1
            assert '--certificate-identity "$SIGNER"' in command, command
            assert (
                "--certificate-oidc-issuer https://token.actions.githubusercontent.com" in command
            )
            assert '--certificate-github-workflow-sha "$SHA"' in command, command
            assert "--certificate-github-workflow-trigger push" in command, command
            assert step["env"]["SHA"] == "${{ github.sha }}", step.get("name")
    assert verifies >= 3, "dev digest, then prod digest (twice) are verified"
    assert main["env"]["SIGNER"].endswith("/.github/workflows/dev.yml@refs/heads/dev")


def test_workflow_digest_is_a_digest_before_it_is_used(tmp_path: Path) -> None:
    """The digest reaches GITHUB_ENV (main.yml) and `IMAGE@DIGEST` references (dev.yml's
    later jobs, through the build job's output): each checks its shape before use."""
    step = release_step("digest=$(crane digest")
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/comments-api-dev"
    good = "sha256:" + "ab" * 32
    env = {"DEV_IMAGE": image, "SHA": "c0ffee" * 6 + "c0ff"}
    proc = run_step(step, tmp_path / "good", env, {"crane": f"echo {good}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "good" / "github-env").read_text() == f"DIGEST={good}\n"
    # A registry answer that is not a digest never reaches GITHUB_ENV, where a second
    # line would set another variable for every later step.
    proc = run_step(step, tmp_path / "bad", env, {"crane": "printf 'sha256:ab\\nAPPLIED=true\\n'"})
    assert proc.returncode != 0
    assert not (tmp_path / "bad" / "github-env").exists()

    dev = workflows()["dev.yml"]
    for job_id in ("e2e", *job_of(dev, "cosign sign")):
        job = dev["jobs"][job_id]
        first = next(s for s in job["steps"] if "DIGEST" in s.get("run", ""))
        proc = run_step(
            first,
            tmp_path / job_id,
            {"DEV_IMAGE": image, "DIGEST": "", "AWS_REGION": "eu-west-1"},
            {name: "exit 0" for name in ("cosign", "kustomize", "kubectl")},
        )
        assert proc.returncode != 0, f"{job_id}: ran with no digest"
        assert (tmp_path / job_id / "calls.log").read_text() == "", job_id


def test_workflow_settings_checked_before_production_changes(
    tmp_path: Path, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """PRODUCTION_URL is used only by the smoke test, after production changed: a missing
    one found there would roll a good release back after its migration ran. So would an
    http:// one: both production overlays answer plain HTTP with a 308 to HTTPS (checked
    below on the rendered Ingresses), which the smoke test's `curl -f` took for a pass and
    its /metrics check (404 expected) for a failure."""
    job = workflows()["main.yml"]["jobs"]["release"]
    apply = next(i for i, s in enumerate(job["steps"]) if "kubectl apply" in s.get("run", ""))
    checks = [
        s
        for s in job["steps"][:apply]
        if "PRODUCTION_URL" in s.get("run", "")
        and s.get("env", {}).get("PRODUCTION_URL") == "${{ vars.PRODUCTION_URL }}"
    ]
    assert checks, "PRODUCTION_URL is checked before the apply"
    (check,) = checks
    for i, (url, ok) in enumerate(
        [
            ("https://comments.example.com", True),
            ("http://comments.example.com", False),
            ("HTTP://comments.example.com", False),
            ("", False),
            ("comments.example.com", False),
            ("https://", False),
            ("ftp://comments.example.com", False),
        ]
    ):
        proc = run_step(check, tmp_path / str(i), {"PRODUCTION_URL": url, "OVERLAY": "production"})
        assert (proc.returncode == 0) == ok, (url, proc.stdout, proc.stderr)
        if not ok:
            assert "::error::vars.PRODUCTION_URL must be the https:// URL" in proc.stdout
    # Why plain HTTP can never be the URL production answers on: every overlay main.yml
    # deploys redirects it (force-ssl-redirect: a 308 before any route is tried).
    for overlay in ("production", "production-aws"):
        ingress = one(rendered[overlay], "Ingress", "comments-api")
        notes = ingress["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true", overlay


def test_workflow_installs_no_latest_tool_in_the_production_job() -> None:
    """setup-crane installs crane's latest release unless told a version: that would run in
    the job that holds the production role. cosign-installer pins and checks its own."""
    job = workflows()["main.yml"]["jobs"]["release"]
    (crane,) = job_uses(job, "imjasonh/setup-crane@")
    assert re.fullmatch(r"v\d+\.\d+\.\d+", str(crane.get("with", {}).get("version", ""))), crane
    for step in job["steps"]:
        for key, value in step.get("with", {}).items():
            if "version" in key or key.endswith("-release"):
                assert not re.search(r"latest|tip|main", str(value)), (step["uses"], key, value)


# --- main.yml's release job: timeouts, the rollback target, the rollback ---------------

# configure-aws-credentials' session when role-duration-seconds is not given (its
# DEFAULT_ROLE_DURATION), and the production role's max_session_seconds default.
AWS_SESSION_MINUTES = 60
# GitHub's cancellation: the steps that still run get 5 minutes in all ("Workflow
# cancellation reference"); the runner kills the worker 15 s before that.
CANCEL_WINDOW_SECONDS = 5 * 60 - 15


def test_workflow_release_timeouts_leave_the_rollback_its_time() -> None:
    job = workflows()["main.yml"]["jobs"]["release"]
    names = [s.get("name") or s.get("uses") for s in job["steps"]]
    untimed = [n for s, n in zip(job["steps"], names, strict=True) if not s.get("timeout-minutes")]
    # A step without one may run for 360 minutes: it, not the step, would meet the job's
    # timeout, and the rollback would run cancelled, with 5 minutes at most.
    assert not untimed, f"steps without timeout-minutes: {untimed}"
    total = sum(s["timeout-minutes"] for s in job["steps"])
    # 4 minutes for setting up the job (downloading the actions) and the post steps.
    assert total + 4 <= job["timeout-minutes"], (total, job["timeout-minutes"])
    (aws,) = job_uses(job, AWS_CREDENTIALS)
    assert "role-duration-seconds" not in aws["with"]
    with_credentials = job["steps"][job["steps"].index(aws) :]
    assert sum(s["timeout-minutes"] for s in with_credentials) < AWS_SESSION_MINUTES, (
        "the rollback could run with expired AWS credentials"
    )
    # The rollback is the last step, or a later step's time would be taken from it.
    assert "rollout undo" in job["steps"][-1]["run"]


KUBECTL = """
case " $* " in
  *" get deployment "*) cat "$RUNNER_TEMP/current-image" ;;
  *" rollout undo "*) cp "$RUNNER_TEMP/previous-image" "$RUNNER_TEMP/current-image" ;;
esac
"""
PROD_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/comments-api-prod"
RELEASE_DIGEST = "sha256:" + "ab" * 32
RELEASE = f"{PROD_IMAGE}@{RELEASE_DIGEST}"
OLDER = f"{PROD_IMAGE}@sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def production_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `comments-api serve` standing for production after a rollback."""
    workdir = tmp_path_factory.mktemp("production")
    env = {"DATABASE_URL": f"sqlite:///{workdir / 'comments.db'}", "RATELIMIT_ENABLED": "false"}
    with ServiceProcess(env, workdir, workers=1) as service:
        yield service.base


def run_rollback_step(
    tmp_path: Path,
    previous: str,
    current: str,
    job_status: str = "failure",
    smoke_url: str = "",
) -> tuple[subprocess.CompletedProcess[str], str]:
    """main.yml's rollback step; `kubectl` is a stand-in (no cluster can run here) that
    reports the Deployment's image (`current`) and, on `rollout undo`, goes back to
    `previous`, the image the job recorded before its apply. `smoke_url` is production as
    readers reach it (vars.PRODUCTION_URL)."""
    step = release_step("rollout undo")
    tmp_path.mkdir(parents=True)
    (tmp_path / "previous-image").write_text(previous)
    (tmp_path / "current-image").write_text(current)
    env = {
        "NS": "comments-production",
        "PROD_IMAGE": PROD_IMAGE,
        "DIGEST": RELEASE_DIGEST,
        "JOB_STATUS": job_status,
        "SMOKE_URL": smoke_url,
    }
    proc = run_step(step, tmp_path, env, {"kubectl": KUBECTL})
    return proc, (tmp_path / "calls.log").read_text()


def test_workflow_production_rollback_undoes_only_a_change_of_this_job(
    tmp_path: Path, production_url: str
) -> None:
    job = workflows()["main.yml"]["jobs"]["release"]
    step = release_step("rollout undo")
    # Cancelled half way through the rollout (by hand, or the job timing out), production is
    # rolled back too; `failure()` alone is false for a cancelled run.
    assert "cancelled()" in step["if"]
    assert "env.APPLIED == 'true'" in step["if"]
    assert step.get("env", {}).get("JOB_STATUS") == "${{ job.status }}", "the wait knows a cancel"
    waits = [
        s for s in job["steps"] if re.search(r"kubectl .*(wait|rollout)|curl ", s.get("run", ""))
    ]
    assert len(waits) >= 3
    for s in waits:
        assert s.get("timeout-minutes"), f"{s.get('name')}: a hang would reach the job timeout"
    assert sum(s["timeout-minutes"] for s in waits) < job["timeout-minutes"]
    # APPLIED is written before the apply, so that a step cancelled during the apply is
    # rolled back too; GITHUB_ENV is read after a step even when it fails.
    (migrate,) = [s for s in job["steps"] if "kubectl apply" in s.get("run", "")]
    script = migrate["run"]
    assert script.index('echo "APPLIED=true"') < script.index("kubectl apply")

    # A re-run for the digest production already served: the apply changed nothing, and
    # `rollout undo` would take production to the release before it.
    proc, calls = run_rollback_step(tmp_path / "same", RELEASE, RELEASE)
    assert proc.returncode == 1
    assert "rollout undo" not in calls, calls
    assert "nothing to undo" in proc.stdout
    # A real change of this job is undone, and checked.
    proc, calls = run_rollback_step(tmp_path / "changed", OLDER, RELEASE, smoke_url=production_url)
    assert proc.returncode == 1, "the job fails after a rollback too"
    assert "rollout undo deployment/comments-api" in calls
    assert "--timeout=600s" in calls
    assert f"now serving: {OLDER}" in proc.stdout
    assert f"production is back on {OLDER} and answers" in proc.stdout


def test_workflow_rollback_that_does_not_answer_says_production_is_down(tmp_path: Path) -> None:
    """Ready pods after `rollout undo` are no proof readers are served (the Ingress, the
    database): the step said nothing more than "now serving", and the on-call took
    production for restored. The release gone back to must answer; a bounded check."""
    closed = f"http://127.0.0.1:{free_port()}"
    proc, calls = run_rollback_step(tmp_path / "down", OLDER, RELEASE, smoke_url=closed)
    assert proc.returncode == 1
    assert "rollout undo deployment/comments-api" in calls
    assert "does not answer either: production is down, act now" in proc.stdout
    assert "and answers" not in proc.stdout
    assert proc.stdout.count("not answering yet") == 6, "bounded tries"


@pytest.mark.parametrize(
    ("failing", "said"),
    [("wait", "the migration Job did not complete"), ("rollout", "the rollout did not complete")],
)
def test_workflow_failed_release_says_what_the_cluster_said(
    tmp_path: Path, failing: str, said: str
) -> None:
    """A migration or rollout that does not complete prints the Job's conditions, the pods,
    the Warning events and the migration's log before the step fails (and the rollback
    step replaces the pods): it printed only kubectl's "timed out"."""
    step = release_step("kubectl apply")
    kubectl = f"""
case " $* " in
  *" kustomize "*) echo "image: {PROD_IMAGE}@{RELEASE_DIGEST}" ;;
  *" {failing} "*) echo "error: timed out waiting for the condition" >&2; exit 1 ;;
  *" get job "*) echo "Failed=True: BackoffLimitExceeded: Job has reached the backoff limit" ;;
  *" get pods "*) echo "comments-api-7d9-x   0/1   ImagePullBackOff" ;;
  *" get events "*) echo "Warning   Failed   pod/comments-api-7d9-x   ErrImagePull" ;;
  *" logs "*) echo "alembic: relation comments already exists" ;;
esac
"""
    env = {"NS": "comments-production", "PROD_IMAGE": PROD_IMAGE, "DIGEST": RELEASE_DIGEST}
    env["OVERLAY"] = "production"
    proc = run_step(step, tmp_path, env, {"kubectl": kubectl, "kustomize": ""})
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr
    assert f"::error::{said}" in out
    for told in ("BackoffLimitExceeded", "ImagePullBackOff", "ErrImagePull", "already exists"):
        assert told in out, out
    assert "APPLIED=true" in (tmp_path / "github-env").read_text()


def test_workflow_rollback_leaves_a_release_the_apply_did_not_change(tmp_path: Path) -> None:
    """APPLIED is set before `kubectl apply`: when the apply is refused or cancelled before
    the Deployment took the new image, production still runs the release from before the
    job, and `rollout undo` would replace it with the one before that."""
    proc, calls = run_rollback_step(tmp_path / "refused", OLDER, OLDER)
    assert proc.returncode == 1
    assert "rollout undo" not in calls, calls
    assert "nothing to undo" in proc.stdout
    assert OLDER in proc.stdout


def test_workflow_first_release_failing_is_not_undone(tmp_path: Path) -> None:
    """No release before this one: `rollout undo` has nothing to go back to (and would
    only fail with kubectl's own message). Say so, and that someone must act."""
    proc, calls = run_rollback_step(tmp_path / "first", "", RELEASE)
    assert proc.returncode == 1
    assert "rollout undo" not in calls, calls
    assert "act now" in proc.stdout


def test_workflow_cancelled_rollback_waits_within_the_cancel_window(
    tmp_path: Path, production_url: str
) -> None:
    """A cancelled run, or a job at its timeout, still runs the rollback (cancelled()), but
    GitHub ends it 5 minutes after the cancellation: the undo goes first, and the wait for
    it fits in that window, so the log says how it ended."""
    proc, calls = run_rollback_step(
        tmp_path / "cancelled", OLDER, RELEASE, "cancelled", smoke_url=production_url
    )
    assert "rollout undo deployment/comments-api" in calls
    (status,) = [c for c in calls.splitlines() if "rollout status" in c]
    assert calls.index("rollout undo") < calls.index("rollout status")
    wait = int(re.search(r"--timeout=(\d+)s", status).group(1))  # type: ignore[union-attr]
    # The check that the release gone back to answers: its tries, each bounded.
    step = release_step("rollout undo")["run"]
    loop = re.search(r"for try in ([\d ]+); do\n(.*?)\n\s*done", step, re.S)
    assert loop is not None
    tries = len(loop.group(1).split())
    per_try = int(re.search(r"--max-time (\d+)", loop.group(2)).group(1))  # type: ignore[union-attr]
    per_try += int(re.search(r"sleep (\d+)", loop.group(2)).group(1))  # type: ignore[union-attr]
    # The cancelled step gets up to 10 s to stop (SIGINT, 7.5 s, SIGTERM, 2.5 s).
    assert wait + tries * per_try + 10 + 30 < CANCEL_WINDOW_SECONDS, (wait, tries, per_try)
    assert f"production is back on {OLDER} and answers" in proc.stdout
    assert f"now serving: {OLDER}" in proc.stdout


def test_workflow_rollback_target_is_read_or_the_job_stops(tmp_path: Path) -> None:
    """The previous image decides whether the rollback may undo: an error reading it must
    stop the job before production changes, not pass as "no previous release"."""
    step = release_step('> "$RUNNER_TEMP/previous-image"')
    assert "kubectl apply" not in step["run"]
    env = {"NS": "comments-production"}
    proc = run_step(
        step,
        tmp_path / "error",
        env,
        {"kubectl": "echo 'Error from server (Forbidden)' >&2; exit 1"},
    )
    assert proc.returncode != 0, "a failed read of the running release was swallowed"
    proc = run_step(step, tmp_path / "found", env, {"kubectl": f"echo {OLDER}"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "found" / "previous-image").read_text().strip() == OLDER


def test_renovate_updates_actions_images_and_charts() -> None:
    config = json.loads((ROOT / "renovate.json").read_text())
    rules = config["packageRules"]
    assert any(r.get("matchManagers") == ["github-actions"] and r.get("pinDigests") for r in rules)
    assert any(
        "deploy/k8s" in "".join(config.get("kubernetes", {}).get("managerFilePatterns", []))
        for _ in [0]
    )
    assert any(
        "provision-k8s" in "".join(m.get("managerFilePatterns", []))
        for m in config["customManagers"]
    )


# --- the workflows on AWS (deploy/terraform) ------------------------------------------

TF_ENVS = ROOT / "deploy" / "terraform" / "environments"
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials@"


def job_uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if s.get("uses", "").startswith(action)]


def test_aws_roles_through_oidc_only_where_needed() -> None:
    for name, flow in workflows().items():
        text = (WORKFLOWS / name).read_text()
        assert "ghcr.io" not in text, name
        assert "KUBECONFIG }}" not in text, f"{name}: no kubeconfig secret, EKS through the role"
        assert "secrets." not in text.replace("secrets.GITHUB_TOKEN", ""), name
        for job_id, job in flow["jobs"].items():
            perms = job.get("permissions", {})
            assert "packages" not in perms, f"{name}/{job_id}"
            aws = job_uses(job, AWS_CREDENTIALS)
            # The OIDC token exactly where a job assumes an AWS role.
            assert (perms.get("id-token") == "write") == bool(aws), f"{name}/{job_id}"
            for step in aws:
                assert re.fullmatch(r"\$\{\{ vars\.[A-Z_]+ \}\}", step["with"]["role-to-assume"])
                assert step["with"]["aws-region"] == "${{ vars.AWS_REGION }}"
                assert not {"aws-access-key-id", "aws-secret-access-key"} & set(step["with"])
            if aws:
                (login,) = job_uses(job, "aws-actions/amazon-ecr-login@") or [None]
                assert login is None or job["steps"].index(login) > job["steps"].index(aws[0])


def terraform_trust() -> dict[tuple[str, str], set[str]]:
    """The OIDC subjects (without the `repo:OWNER/NAME:` prefix) each role variable's role
    trusts, keyed by (scope, variable): scope "repository" or the GitHub Environment that
    holds the variable. Read from the environments' `module "platform"` values; the rule
    that turns them into trusts (the push role of a split trusts ci_push_environment only,
    the deploy role the environment and github_branches, an unsplit role both) is
    modules/platform's, which its `terraform test` and tests/terraform (the real plans)
    check. The variables' scopes are docs/terraform.md's hand-over."""
    trusts: dict[str, dict[str, set[str]]] = {}
    for env in ("staging", "production"):
        main_tf = (TF_ENVS / env / "main.tf").read_text()
        assert re.search(rf'^\s*environment\s*=\s*"{env}"$', main_tf, re.M)
        branches = re.search(r"^\s*github_branches\s*=\s*\[(.*?)\]", main_tf, re.M | re.S)
        assert branches, f"{env}: github_branches"
        deploy = {f"environment:{env}"} | {
            f"ref:refs/heads/{b}" for b in re.findall(r'"([^"]+)"', branches.group(1))
        }
        push_env = re.search(r'^\s*ci_push_environment\s*=\s*"([^"]+)"', main_tf, re.M)
        split = bool(re.search(r"^\s*separate_deploy_role\s*=\s*true", main_tf, re.M))
        # Without a push environment both roles trust the same subjects (the module
        # refuses that since the fix; this reading keeps the test meaningful without it).
        push = {f"environment:{push_env.group(1)}"} if push_env else deploy
        trusts[env] = {"push": push, "deploy": deploy if split else set()}
    return {
        ("repository", "DEV_ROLE_ARN"): trusts["staging"]["push"],
        ("repository", "DEV_DEPLOY_ROLE_ARN"): trusts["staging"]["deploy"],
        ("staging", "AWS_ROLE_ARN"): trusts["staging"]["deploy"],
        ("production", "AWS_ROLE_ARN"): trusts["production"]["push"],
    }


def job_environment(job: dict[str, Any]) -> str | None:
    env = job.get("environment")
    return env["name"] if isinstance(env, dict) else env


def runs_on_push_only(flow: dict[str, Any], job_id: str) -> bool:
    """The job runs only for a push: the workflow has no other trigger, or the job (or
    one it needs, since a skipped need skips it) is conditioned on one."""
    if set(flow["on"]) == {"push"}:
        return True
    job = flow["jobs"][job_id]
    if job.get("if") == "github.event_name == 'push'":
        return True
    needs = job.get("needs", [])
    return any(runs_on_push_only(flow, n) for n in ([needs] if isinstance(needs, str) else needs))


def test_roles_match_the_terraform_trust() -> None:
    """Each job's role trusts the OIDC subject that job's token carries: GitHub puts
    `environment:NAME` in `sub` for a job that names an Environment, and the pushed
    branch's ref otherwise. And no job but those that push can reach the push role:
    a step of E2E can request its own token and assume any role that trusts it by ARN."""
    trust = terraform_trust()
    push_roles = {"DEV_ROLE_ARN"}
    flows = workflows()
    # Both push to the dev registry: the image, and cosign's signature next to it.
    assert {
        job_id
        for job_id, job in flows["dev.yml"]["jobs"].items()
        for step in job_uses(job, AWS_CREDENTIALS)
        if step["with"]["role-to-assume"] == "${{ vars.DEV_ROLE_ARN }}"
    } == {"build", "sign"}
    checked = set()
    for name, flow in flows.items():
        for job_id, job in flow["jobs"].items():
            for step in job_uses(job, AWS_CREDENTIALS):
                (var,) = re.findall(r"vars\.(\w+)", step["with"]["role-to-assume"])
                env = job_environment(job)
                if env is None:
                    # Pull requests get `pull_request`, which no role trusts.
                    assert runs_on_push_only(flow, job_id), f"{name}/{job_id}"
                    token = {f"ref:refs/heads/{b}" for b in flow["on"]["push"]["branches"]}
                else:
                    token = {f"environment:{env}"}
                # An environment's variable shadows the repository's of the same name.
                scope = env if (env, var) in trust else "repository"
                assert (scope, var) in trust, f"{name}/{job_id}: no {var} in scope {scope}"
                assert token <= trust[scope, var], (
                    f"{name}/{job_id}: {var}'s role trusts {sorted(trust[scope, var])}, "
                    f"the job's token carries {sorted(token)}"
                )
                if var not in push_roles:
                    for push in push_roles:
                        assert not token & trust["repository", push], (
                            f"{name}/{job_id} could assume {push}'s role with its own token"
                        )
                checked.add(f"{name}/{job_id}")
    assert checked >= {"dev.yml/build", "dev.yml/e2e", "dev.yml/scan", "dev.yml/sign"}
    assert "main.yml/release" in checked
    main = flows["main.yml"]
    for job_id, job in main["jobs"].items():
        runs = "\n".join(s.get("run", "") for s in job["steps"])
        if "crane copy" in runs or "kubectl apply" in runs:
            assert job["environment"]["name"] == "production", job_id
            (aws,) = job_uses(job, AWS_CREDENTIALS)
            assert aws["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
            assert job_uses(job, "aws-actions/amazon-ecr-login@")
        if "kubectl apply" in runs:
            assert (
                'aws eks update-kubeconfig --region "$AWS_REGION" --name "$EKS_CLUSTER_NAME"'
                in runs
            )
            assert "production | production-aws)" in runs, "the overlay variable is checked"


def test_every_workflow_variable_is_handed_over_in_the_docs() -> None:
    used = set()
    for path in WORKFLOWS.glob("*.yml"):
        used |= set(re.findall(r"vars\.([A-Z0-9_]+)", path.read_text()))
    assert used >= {"AWS_REGION", "DEV_IMAGE", "DEV_ROLE_ARN", "AWS_ROLE_ARN", "PROD_IMAGE"}
    terraform_doc = (ROOT / "docs" / "terraform.md").read_text()
    deployment_doc = (ROOT / "docs" / "deployment.md").read_text()
    outputs = set()
    for env in ("staging", "production"):
        outputs |= set(
            re.findall(r'^output "(\w+)"', (TF_ENVS / env / "outputs.tf").read_text(), re.M)
        )
    for var in sorted(used):
        rows = [line for line in terraform_doc.splitlines() if f"`{var}`" in line and "|" in line]
        assert rows, f"docs/terraform.md hands over no {var}"
        named = set(re.findall(r"`(\w+)`", " ".join(rows))) & outputs
        assert named or var in ("K8S_OVERLAY", "PRODUCTION_URL", "SCAN_FAIL_SEVERITY"), (
            f"{var}: which output?"
        )
        assert f"`{var}`" in deployment_doc, f"docs/deployment.md does not mention {var}"
