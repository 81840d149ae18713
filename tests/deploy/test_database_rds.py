"""PostgreSQL on Amazon RDS (components/database-rds, overlays/production-aws): the
rendered objects agree with what deploy/terraform creates and with the app's settings.

No offline schema covers every field's meaning, so the External Secrets wiring is asserted
here; validate/validate.mjs checks the same objects against the CRD schemas (test_tools).
"""

from __future__ import annotations

import copy
import ipaddress
import re
import string
import urllib.parse
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from .conftest import K8S, ROOT, find, one, pod_templates, secret_names

pytestmark = pytest.mark.k8s

TF_PROD = ROOT / "deploy" / "terraform" / "environments" / "production"
TF_PLATFORM = ROOT / "deploy" / "terraform" / "modules" / "platform"
PARAMS = K8S / "overlays" / "production-aws" / "aws-parameters.yaml"
# Where components/database-rds mounts the operator's ConfigMap rds-ca-bundle, and where
# Terraform's database_url_template points sslrootcert.
CA_CONFIGMAP, CA_DIR, CA_FILE = "rds-ca-bundle", "/etc/rds-ca", "/etc/rds-ca/rds-ca-bundle.pem"
CNPG_KINDS = {"Cluster", "ScheduledBackup", "ObjectStore", "PodMonitor", "StatefulSet"}


def tfvars() -> dict[str, str]:
    """Production's string values: the deployer's (terraform.tfvars) and the environment's
    own (its `module "platform"` arguments in main.tf)."""
    text = (TF_PROD / "terraform.tfvars").read_text() + (TF_PROD / "main.tf").read_text()
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', text, re.M))


def parameters() -> dict[str, str]:
    return yaml.safe_load(PARAMS.read_text())["data"]


@pytest.fixture(scope="module")
def aws(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["production-aws"]


def test_the_in_cluster_database_is_gone_and_nothing_else(
    rendered: dict[str, list[dict[str, Any]]], aws: list[dict[str, Any]]
) -> None:
    def names(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["kind"], d["metadata"]["name"]) for d in docs}

    dropped = names(rendered["production"]) - names(aws)
    assert {kind for kind, _ in dropped} == CNPG_KINDS - {"StatefulSet"} | {"NetworkPolicy"}
    assert ("NetworkPolicy", "comments-db-cnpg") in dropped
    assert not [d for d in aws if d["kind"] in CNPG_KINDS and "comments-db" in str(d)]
    assert not find(aws, "Service", "comments-db-rw")
    added = names(aws) - names(rendered["production"])
    assert added == {
        ("ServiceAccount", "comments-api-secrets"),
        ("SecretStore", "comments-api-aws"),
        ("ExternalSecret", "comments-api-database"),
        ("NetworkPolicy", "comments-api-egress-rds"),
    }
    # Production's other choices stay: digest-pinned image, zones, HPA on saturation. The
    # containers differ by the RDS CA bundle's mount only.
    deploy = one(aws, "Deployment", "comments-api")
    prod = one(rendered["production"], "Deployment", "comments-api")
    containers = copy.deepcopy(deploy["spec"]["template"]["spec"]["containers"])
    for container in containers:
        container["volumeMounts"] = [m for m in container["volumeMounts"] if m["name"] != "rds-ca"]
    assert containers == prod["spec"]["template"]["spec"]["containers"]
    assert "@sha256:" in deploy["spec"]["template"]["spec"]["containers"][0]["image"]


def test_every_parameter_is_filled_and_the_parameters_are_not_deployed(
    aws: list[dict[str, Any]],
) -> None:
    text = yaml.safe_dump_all(aws)
    assert "PARAMETER" not in text
    assert "192.0.2." not in text  # the component's documentation-range defaults
    assert not find(aws, "ConfigMap", "comments-api-aws-parameters")
    component = yaml.safe_load(
        (K8S / "components" / "database-rds" / "kustomization.yaml").read_text()
    )
    used = {r["source"]["fieldPath"].removeprefix("data.") for r in component["replacements"]}
    assert used == set(parameters())


def test_service_account_assumes_the_terraform_secrets_reader_role(
    aws: list[dict[str, Any]],
) -> None:
    main = (TF_PLATFORM / "main.tf").read_text()
    block = re.search(r'module "secrets_reader" \{(.*?)\n\}', main, re.S)
    assert block, "deploy/terraform modules/platform: module secrets_reader moved"
    sa_name = re.search(r'service_account\s*=\s*"([^"]+)"', block.group(1))
    assert sa_name
    assert "namespace         = var.app_namespace" in block.group(1)
    assert '"${local.name}-secrets-reader"' in block.group(1)
    namespace = tfvars().get("app_namespace")
    assert namespace

    sa = one(aws, "ServiceAccount", sa_name.group(1))
    assert sa["metadata"]["namespace"] == namespace
    assert sa["automountServiceAccountToken"] is False
    arn = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    account = tfvars()["aws_account_id"]
    assert arn == f"arn:aws:iam::{account}:role/comments-api-production-secrets-reader"
    # No workload runs as it: only the operator's token request uses it.
    runs_as = {pod.get("serviceAccountName") for _, pod in pod_templates(aws)}
    assert sa["metadata"]["name"] not in runs_as


def test_external_secret_builds_database_url_from_the_rds_secret(
    aws: list[dict[str, Any]],
) -> None:
    external = one(aws, "ExternalSecret", "comments-api-database")["spec"]
    store = one(aws, "SecretStore", external["secretStoreRef"]["name"])["spec"]["provider"]["aws"]
    assert external["secretStoreRef"]["kind"] == "SecretStore"
    assert store["service"] == "SecretsManager"
    assert store["region"] == tfvars()["region"]
    assert store["auth"]["jwt"]["serviceAccountRef"]["name"] == "comments-api-secrets"
    # username and password of the one RDS-managed secret.
    refs = {d["secretKey"]: d["remoteRef"] for d in external["data"]}
    assert set(refs) == {"username", "password"}
    assert {r["property"] for r in refs.values()} == {"username", "password"}
    assert all(r["property"] == key for key, r in refs.items())
    (key,) = {r["key"] for r in refs.values()}
    assert re.fullmatch(r"arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+", key), key
    assert re.match(r"^\d+[smh]$", external["refreshInterval"])
    target = external["target"]
    assert target["creationPolicy"] == "Owner"
    assert target["template"]["engineVersion"] == "v2"
    template = target["template"]["data"]["database-url"]
    # The same shape as Terraform's database_url_template output.
    outputs = (ROOT / "deploy" / "terraform" / "modules" / "database" / "outputs.tf").read_text()
    tf_template = re.search(
        r'output "database_url_template" \{.*?value\s*=\s*"(.*?)"\n', outputs, re.S
    )
    assert tf_template
    shape = re.fullmatch(r"(.*@)\$\{.*\}(\?.*)", tf_template.group(1))
    assert shape
    assert template.startswith(shape.group(1)), template
    assert template.endswith(shape.group(2)), template

    # What the app gets: the template as External Secrets renders it (Go's urlquery is
    # QueryEscape), with a password of every character RDS may generate, parses back to
    # the same credentials, host and database.
    password = "".join(c for c in string.punctuation if c not in '/@" ') + "aZ09"
    url = template.replace("{{ .username | urlquery }}", urllib.parse.quote_plus("app", safe=""))
    url = url.replace("{{ .password | urlquery }}", urllib.parse.quote_plus(password, safe=""))
    assert "{{" not in url
    parsed = make_url(url)
    assert parsed.drivername == "postgresql+psycopg"
    assert (parsed.username, parsed.password) == ("app", password)
    assert parsed.port == 5432
    assert parsed.database == "comments"
    # The server verified: its certificate against the mounted RDS CA bundle, its name
    # against the host (tests/test_database_tls.py shows what each refuses).
    assert parsed.query == {"sslmode": "verify-full", "sslrootcert": CA_FILE}


def test_pods_read_database_url_from_the_external_secret(aws: list[dict[str, Any]]) -> None:
    target = one(aws, "ExternalSecret", "comments-api-database")["spec"]["target"]["name"]
    for kind, name in (("Deployment", "comments-api"), ("Job", "comments-api-migrate")):
        pod = one(aws, kind, name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}["secrets"]
        files = {
            f"{mount['secrets']}/{item['path']}": src["secret"]["name"]
            for src in volume["projected"]["sources"]
            for item in src["secret"]["items"]
        }
        assert files[env["DATABASE_URL_FILE"]] == target, name
        if "CLIENT_IP_HASH_SALT_FILE" in env:
            assert files[env["CLIENT_IP_HASH_SALT_FILE"]] == "comments-api"
        assert volume["projected"]["defaultMode"] == 0o400
        assert "comments-db-credentials" not in secret_names(pod)


def test_app_may_reach_rds_in_the_private_subnets_only(aws: list[dict[str, Any]]) -> None:
    policy = one(aws, "NetworkPolicy", "comments-api-egress-rds")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "comments-api"}
    (rule,) = policy["egress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    cidrs = [ipaddress.ip_network(t["ipBlock"]["cidr"]) for t in rule["to"]]
    params = parameters()
    assert [str(c) for c in cidrs] == [params[f"database-cidr-{z}"] for z in "abc"]
    # Inside the VPC and not the whole of it (the public subnets stay out). The exact
    # ranges are checked against the Terraform plan in tests/terraform.
    vpc = ipaddress.ip_network(tfvars()["vpc_cidr"])
    assert all(c.subnet_of(vpc) and c != vpc for c in cidrs)  # type: ignore[arg-type]
    assert len(set(cidrs)) == 3


def test_pods_mount_the_rds_ca_bundle_read_only_where_the_url_points(
    aws: list[dict[str, Any]],
) -> None:
    # verify-full with sslrootcert=/etc/rds-ca/...: without the file in the pod libpq
    # refuses every connection, so the URL and the mount come in one overlay.
    outputs = (ROOT / "deploy" / "terraform" / "modules" / "database" / "outputs.tf").read_text()
    assert f"?sslmode=verify-full&sslrootcert={CA_FILE}" in outputs
    url = parameters()["database-url-template"]
    assert url.endswith(f"?sslmode=verify-full&sslrootcert={CA_FILE}"), url
    for kind, name in (("Deployment", "comments-api"), ("Job", "comments-api-migrate")):
        pod = one(aws, kind, name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == CA_DIR]
        assert mount.get("readOnly") is True, name
        assert "subPath" not in mount  # a subPath file would miss a ConfigMap update
        volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
        config_map = volume["configMap"]
        assert config_map["name"] == CA_CONFIGMAP, name
        # A missing ConfigMap or key keeps the pod from starting instead of starting it
        # with a URL that cannot connect.
        assert config_map.get("optional") is not True, name
        (item,) = config_map["items"]
        assert f"{CA_DIR}/{item['path']}" == CA_FILE, name
        assert item["key"] == "rds-ca-bundle.pem"
        # Public certificates, read by the app's non-root user.
        assert config_map["defaultMode"] & 0o004
        assert not config_map["defaultMode"] & 0o222
    # The operator makes it (scripts/provision-k8s.sh --rds-ca-bundle); never rendered, so
    # an apply cannot replace the bundle with anything.
    assert not find(aws, "ConfigMap", CA_CONFIGMAP)
