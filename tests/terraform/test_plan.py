"""The high-availability and security properties of the platform, read from the real
offline plans of the staging and production roots (and the state bootstrap).

Each test names the property it guards; if a change to deploy/terraform loses it, the
plan no longer shows it and CI fails. The module-level `terraform test` suites check the
modules in isolation; these check what the environments actually ask AWS for.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.terraform

ENVS = ("staging", "production")
REPOSITORY = "example/comments-api"  # environments/*/terraform.tfvars
ACCOUNT = "123456789012"
GITHUB_OIDC = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
REQUIRED_TAGS = {"Project", "Environment", "ManagedBy", "Owner"}
TF_DIR = Path(__file__).resolve().parents[2] / "deploy" / "terraform"


def changes(plan: dict[str, Any], rtype: str, address_part: str = "") -> list[dict[str, Any]]:
    """Resource changes of one type (optionally whose address contains address_part)."""
    return [
        rc
        for rc in plan["resource_changes"]
        if rc["type"] == rtype and address_part in rc["address"] and rc["mode"] == "managed"
    ]


def after(rc: dict[str, Any]) -> dict[str, Any]:
    return rc["change"]["after"]


def unknown(rc: dict[str, Any], attr: str) -> Any:
    return rc["change"]["after_unknown"].get(attr)


def platform_calls(plan: dict[str, Any]) -> dict[str, Any]:
    """The module calls of modules/platform, which each environment root calls once."""
    root = plan["configuration"]["root_module"]
    assert set(root["module_calls"]) == {"platform"}
    calls: dict[str, Any] = root["module_calls"]["platform"]["module"]["module_calls"]
    return calls


def one(plan: dict[str, Any], rtype: str, address_part: str = "") -> dict[str, Any]:
    found = changes(plan, rtype, address_part)
    assert len(found) == 1, f"expected one {rtype} {address_part}, got {len(found)}"
    return found[0]


@pytest.fixture(params=ENVS)
def env(request: pytest.FixtureRequest, plans: dict[str, dict[str, Any]]) -> tuple[str, dict]:
    return request.param, plans[request.param]


def test_plans_create_everything_and_nothing_else(plans: dict[str, dict[str, Any]]) -> None:
    for name, plan in plans.items():
        actions = {tuple(rc["change"]["actions"]) for rc in plan["resource_changes"]}
        assert actions == {("create",)}, f"{name}: {actions}"
        assert not plan.get("errored", False)
        # Nothing reads AWS at plan time: no data sources anywhere.
        assert not [rc for rc in plan["resource_changes"] if rc["mode"] == "data"], name
    assert len(plans["production"]["resource_changes"]) > 60


# --- high availability ------------------------------------------------------------


def test_at_least_three_nodes_in_three_zones(env: tuple[str, dict]) -> None:
    name, plan = env
    subnets = {
        rc["index"]: after(rc)
        for rc in changes(plan, "aws_subnet", "module.platform.module.network.aws_subnet.private")
    }
    zones = {s["availability_zone"] for s in subnets.values()}
    assert len(zones) == 3, zones
    assert all(s["availability_zone"] == az for az, s in subnets.items())

    groups = changes(plan, "aws_eks_node_group")
    # One managed node group per zone, keyed by the zone, in that zone's subnet only.
    assert {rc["index"] for rc in groups} == zones
    for rc in groups:
        assert after(rc)["node_group_name"].endswith(rc["index"])
    # Subnet IDs are unknown until apply, so the plan's configuration shows the wiring:
    # network's subnets keyed by zone -> the cluster's subnet_ids_by_zone -> a group per
    # key holding only that key's subnet (the module's terraform test checks the values).
    calls = platform_calls(plan)
    cluster_call = calls["cluster"]
    assert (
        "module.network.private_subnet_ids_by_zone"
        in (cluster_call["expressions"]["subnet_ids_by_zone"]["references"])
    )
    group_cfg = next(
        r for r in cluster_call["module"]["resources"] if r["address"] == "aws_eks_node_group.zone"
    )
    assert group_cfg["for_each_expression"]["references"] == ["var.subnet_ids_by_zone"]
    assert group_cfg["expressions"]["subnet_ids"]["references"] == ["each.value"]
    network = calls["network"]["module"]
    assert network["outputs"]["private_subnet_ids_by_zone"]["expression"]["references"] == [
        "aws_subnet.private"
    ]
    mins = [after(rc)["scaling_config"][0]["min_size"] for rc in groups]
    assert all(m >= 1 for m in mins), mins
    assert sum(mins) >= 3, f"{name}: {sum(mins)} nodes at minimum"
    assert sum(after(rc)["scaling_config"][0]["desired_size"] for rc in groups) >= 3
    assert all(after(rc)["update_config"][0]["max_unavailable"] == 1 for rc in groups)


def test_database_is_multi_az(env: tuple[str, dict]) -> None:
    _, plan = env
    db = after(one(plan, "aws_db_instance"))
    assert db["multi_az"] is True
    assert db["engine"] == "postgres"
    assert db["publicly_accessible"] is False
    assert db["backup_retention_period"] >= 7
    assert db["auto_minor_version_upgrade"] is True
    assert after(one(plan, "aws_db_subnet_group"))["name"] == db["identifier"]
    # The subnet group gets all three private subnets (IDs unknown until apply).
    call = platform_calls(plan)["database"]
    assert "module.network.private_subnet_ids" in call["expressions"]["subnet_ids"]["references"]
    network = platform_calls(plan)["network"]["module"]
    assert network["outputs"]["private_subnet_ids"]["expression"]["references"] == [
        "var.availability_zones",
        "aws_subnet.private",
    ]


def test_nat_gateway_per_zone_in_production(plans: dict[str, dict[str, Any]]) -> None:
    assert len(changes(plans["production"], "aws_nat_gateway")) == 3
    assert len(changes(plans["staging"], "aws_nat_gateway")) == 1  # cost, documented


# --- encryption -------------------------------------------------------------------


def test_database_encrypted_tls_only_password_never_in_terraform(env: tuple[str, dict]) -> None:
    _, plan = env
    rc = one(plan, "aws_db_instance")
    db = after(rc)
    assert db["storage_encrypted"] is True
    assert unknown(rc, "kms_key_id") is True, "customer-managed key"
    assert db["manage_master_user_password"] is True
    assert db.get("password") is None, "the password is RDS's, never a Terraform value"
    assert unknown(rc, "master_user_secret_kms_key_id") is True
    assert db["performance_insights_enabled"] is True
    assert unknown(rc, "performance_insights_kms_key_id") is True
    parameter_group = after(one(plan, "aws_db_parameter_group"))
    params = {p["name"]: p["value"] for p in parameter_group["parameter"]}
    assert params["rds.force_ssl"] == "1"
    assert params["password_encryption"] == "scram-sha-256"


def test_clusters_serve_the_resource_metrics_the_hpa_scales_on(env: tuple[str, dict]) -> None:
    """The delivery's HPA (deploy/k8s/base/hpa.yaml) scales on CPU, a Resource metric that
    only metrics-server serves (metrics.k8s.io): without it every HPA on EKS reported
    FailedGetResourceMetric and stayed at minReplicas. The EKS community add-on, with no
    IAM role (it calls no AWS API). The adapter metric of components/hpa-worker-saturation
    needs kube-prometheus-stack and prometheus-adapter, which Helm installs
    (docs/terraform.md, section 5)."""
    _, plan = env
    hpa = yaml.safe_load((TF_DIR.parents[1] / "deploy" / "k8s" / "base" / "hpa.yaml").read_text())
    assert {"Resource"} <= {m["type"] for m in hpa["spec"]["metrics"]}
    addons = {rc["index"]: after(rc) for rc in changes(plan, "aws_eks_addon")}
    assert "metrics-server" in addons, sorted(addons)
    assert addons["metrics-server"]["addon_name"] == "metrics-server"
    assert addons["metrics-server"]["service_account_role_arn"] is None
    assert addons["metrics-server"]["cluster_name"] == after(one(plan, "aws_eks_cluster"))["name"]


def test_clusters_enforce_the_network_policies_the_overlays_ship(env: tuple[str, dict]) -> None:
    """Both production overlays render NetworkPolicies (components/network-policies: default
    deny, Redis only from the app; database-rds: 5432 only to the database subnets). On EKS
    only the VPC CNI's network policy agent enforces them, and the vpc-cni add-on leaves it
    off unless its configuration sets enableNetworkPolicy: the policies were accepted and
    ignored."""
    _, plan = env
    addons = {rc["index"]: after(rc) for rc in changes(plan, "aws_eks_addon")}
    assert "vpc-cni" in addons, sorted(addons)
    config = json.loads(addons["vpc-cni"].get("configuration_values") or "{}")
    assert config.get("enableNetworkPolicy") == "true", config


def test_eks_secrets_encrypted_with_kms_and_all_logs_on(env: tuple[str, dict]) -> None:
    _, plan = env
    rc = one(plan, "aws_eks_cluster")
    cluster = after(rc)
    assert cluster["encryption_config"][0]["resources"] == ["secrets"]
    assert rc["change"]["after_unknown"]["encryption_config"][0]["provider"][0]["key_arn"] is True
    assert set(cluster["enabled_cluster_log_types"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    assert cluster["access_config"][0]["authentication_mode"] == "API"
    assert cluster["access_config"][0]["bootstrap_cluster_creator_admin_permissions"] is False
    lt = after(one(plan, "aws_launch_template"))
    assert lt["metadata_options"][0]["http_tokens"] == "required"
    assert lt["block_device_mappings"][0]["ebs"][0]["encrypted"] == "true"


def test_kubernetes_api_exposure(plans: dict[str, dict[str, Any]]) -> None:
    prod = after(one(plans["production"], "aws_eks_cluster"))["vpc_config"][0]
    assert prod["endpoint_private_access"] is True
    assert prod["endpoint_public_access"] is False, "production API is private by default"
    staging = after(one(plans["staging"], "aws_eks_cluster"))["vpc_config"][0]
    assert staging["endpoint_private_access"] is True
    assert staging["public_access_cidrs"], "a public staging API lists its allowed ranges"
    assert not any(c.endswith("/0") for c in staging["public_access_cidrs"])


ADMIN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/comments-api-admin"  # environments/*/terraform.tfvars


def test_clusters_have_an_admin_after_the_apply(env: tuple[str, dict]) -> None:
    """The clusters grant their creator nothing (bootstrap_cluster_creator_admin_permissions
    = false) and the CI role only its namespace: with admin_role_arns defaulting to [] an
    apply left a cluster nobody could run kubectl against. The roots require the variable
    (no default, at least one role) and the plan gives that role cluster-admin."""
    name, plan = env
    variables = plan["configuration"]["root_module"]["variables"]
    assert "default" not in variables["admin_role_arns"], f"{name}: admin_role_arns has a default"
    assert plan["variables"]["admin_role_arns"]["value"] == [ADMIN_ROLE]
    entries = [after(rc) for rc in changes(plan, "aws_eks_access_entry", ".admin[")]
    assert [e["principal_arn"] for e in entries] == [ADMIN_ROLE], name
    policies = [after(rc) for rc in changes(plan, "aws_eks_access_policy_association", ".admin[")]
    assert [
        (p["principal_arn"], p["policy_arn"], p["access_scope"][0]["type"]) for p in policies
    ] == [
        (
            ADMIN_ROLE,
            "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
            "cluster",
        )
    ], name


# End of EKS standard support per minor version (the EKS Kubernetes release calendar,
# read 2026-12-05: 14 months after each EKS release). Add a row when the default moves.
EKS_STANDARD_SUPPORT_ENDS = {
    "1.32": date(2026, 3, 23),
    "1.33": date(2026, 7, 29),
    "1.34": date(2026, 12, 2),
    "1.35": date(2027, 3, 27),
}


def test_clusters_run_a_kubernetes_version_in_standard_support(env: tuple[str, dict]) -> None:
    """The clusters' upgrade policy is STANDARD: once a version leaves standard support EKS
    upgrades the cluster on its own (and the next plan asks for the old version back), and
    a version past it would run in extended support (six times the control-plane price).
    This fails on the day the planned version leaves standard support: raise the default
    (modules/cluster, modules/platform) after `aws eks describe-cluster-versions`."""
    name, plan = env
    cluster = after(one(plan, "aws_eks_cluster"))
    assert cluster["upgrade_policy"] == [{"support_type": "STANDARD"}]
    version = cluster["version"]
    assert version in EKS_STANDARD_SUPPORT_ENDS, f"{name}: {version} not in the calendar above"
    ends = EKS_STANDARD_SUPPORT_ENDS[version]
    assert date.today() < ends, f"{name}: EKS standard support of {version} ended on {ends}"


def test_every_kms_key_rotates_and_every_log_group_is_encrypted(
    plans: dict[str, dict[str, Any]],
) -> None:
    for name, plan in plans.items():
        keys = changes(plan, "aws_kms_key")
        assert keys, name
        assert all(after(rc)["enable_key_rotation"] is True for rc in keys), name
        for rc in changes(plan, "aws_cloudwatch_log_group"):
            assert unknown(rc, "kms_key_id") is True, rc["address"]
            assert after(rc)["retention_in_days"] >= 365, rc["address"]


def test_state_bucket_encrypted_versioned_private_tls_only(
    plans: dict[str, dict[str, Any]],
) -> None:
    plan = plans["bootstrap"]
    sse_type = "aws_s3_bucket_server_side_encryption_configuration"
    sse = after(one(plan, sse_type, f"{sse_type}.state"))
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms"
    versioning = changes(plan, "aws_s3_bucket_versioning")
    assert len(versioning) == 2
    assert all(after(v)["versioning_configuration"][0]["status"] == "Enabled" for v in versioning)
    for block in changes(plan, "aws_s3_bucket_public_access_block"):
        b = after(block)
        flags = ("block_public_acls", "block_public_policy", "ignore_public_acls")
        assert all(b[f] is True for f in (*flags, "restrict_public_buckets")), block["address"]
    state_policy = after(one(plan, "aws_s3_bucket_policy", "aws_s3_bucket_policy.state"))
    policy = json.loads(state_policy["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket = after(one(plan, "aws_s3_bucket", "aws_s3_bucket.state"))
    assert bucket["bucket"] == f"comments-api-tfstate-{ACCOUNT}"
    assert one(plan, "aws_iam_openid_connect_provider")["change"]["after"]["url"] == (
        "https://token.actions.githubusercontent.com"
    )


def denied(policy: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> bool:
    """Whether a Deny statement of a bucket policy matches the request: the condition
    operators these policies use, on single-valued keys, as IAM evaluates them (a negated
    operator matches a key absent from the request; Null tests presence)."""
    operators = {
        "Bool": lambda value, expected: value is not None and value == expected,
        "StringEquals": lambda value, expected: value is not None and value == expected,
        "StringNotEquals": lambda value, expected: value is None or value != expected,
        "Null": lambda value, expected: (value is None) == (expected == "true"),
    }
    for statement in policy["Statement"]:
        if statement["Effect"] != "Deny":
            continue
        statement_actions = actions(statement)
        if action not in statement_actions and "s3:*" not in statement_actions:
            continue
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if not any(re.fullmatch(re.escape(r).replace(r"\*", ".*"), resource) for r in resources):
            continue
        if all(
            operators[op](context.get(key), expected)
            for op, keys in statement.get("Condition", {}).items()
            for key, expected in keys.items()
        ):
            return True
    return False


# The request headers of the S3 backend's PutObject (state, lock and digest files) for
# each way of configuring it (hashicorp/terraform internal/backend/remote-state/s3).
SSE = "s3:x-amz-server-side-encryption"
SSE_KEY = "s3:x-amz-server-side-encryption-aws-kms-key-id"
STATE_KEY = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/0a1b2c3d-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({SSE: "AES256"}, True),  # encrypt = true without kms_key_id: SSE-S3
        ({SSE: "aws:kms"}, True),  # the AWS managed aws/s3 key
        ({SSE: "aws:kms", SSE_KEY: STATE_KEY}, False),  # backend.hcl with kms_key_id
        ({}, False),  # no header: the bucket's default, the state key
    ],
    ids=["sse-s3", "aws-managed-key", "state-key", "bucket-default"],
)
def test_state_is_written_only_under_the_state_key(
    plans: dict[str, dict[str, Any]], headers: dict[str, str], refused: bool
) -> None:
    """The bucket's default encryption does not apply to a write that names its own, and
    the backend with `encrypt = true` and no `kms_key_id` names AES256: every state file
    would have been stored past the customer key without a word."""
    policy = json.loads(
        after(one(plans["bootstrap"], "aws_s3_bucket_policy", "aws_s3_bucket_policy.state"))[
            "policy"
        ]
    )
    bucket = f"arn:aws:s3:::comments-api-tfstate-{ACCOUNT}"
    context = {"aws:SecureTransport": "true", **headers}
    for key in ("production/terraform.tfstate", "production/terraform.tfstate.tflock"):
        assert denied(policy, "s3:PutObject", f"{bucket}/{key}", context) is refused, key
    # Reading stays allowed whatever the request says about encryption.
    assert not denied(policy, "s3:GetObject", f"{bucket}/production/terraform.tfstate", context)
    # And plain HTTP stays refused.
    assert denied(policy, "s3:GetObject", f"{bucket}/x", {"aws:SecureTransport": "false"})


def test_backends_lock_and_encrypt() -> None:
    for name in ENVS:
        text = (TF_DIR / "environments" / name / "backend.hcl").read_text()
        settings = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", text, flags=re.MULTILINE))
        assert settings["use_lockfile"] == "true"
        assert settings["encrypt"] == "true"
        assert settings["key"] == f'"{name}/terraform.tfstate"'
        assert 'backend "s3"' in (TF_DIR / "environments" / name / "versions.tf").read_text()


# --- registries -------------------------------------------------------------------


def test_ecr_immutable_scanned_encrypted_with_lifecycle(env: tuple[str, dict]) -> None:
    _, plan = env
    repos = changes(plan, "aws_ecr_repository")
    assert repos
    for rc in repos:
        repo = after(rc)
        assert repo["image_tag_mutability"] == "IMMUTABLE", rc["address"]
        assert repo["image_scanning_configuration"][0]["scan_on_push"] is True
        assert repo["encryption_configuration"][0]["encryption_type"] == "KMS"
        assert repo["force_delete"] is False
    lifecycles = changes(plan, "aws_ecr_lifecycle_policy")
    assert {rc["index"] for rc in lifecycles} == {rc["index"] for rc in repos}


# The rollback depth docs/terraform.md ("ECR lifecycle") promises, in releases, and what
# one release may count as in the worst case: the image index, its image and attestation
# manifests and the cosign signature referrer.
RELEASES_KEPT = {"staging": 100, "production": 200}
MANIFESTS_PER_RELEASE = 4


def test_ecr_lifecycle_keeps_signatures_with_their_images(env: tuple[str, dict]) -> None:
    """Every untagged manifest in these repositories belongs to a tagged image (index
    children, cosign 3's signature referrer): a rule expiring untagged manifests by age
    would delete a signature while its image stays, and main.yml could not promote it nor
    anyone verify it. Only a count over every manifest, deep enough for the releases."""
    name, plan = env
    lifecycles = changes(plan, "aws_ecr_lifecycle_policy")
    assert lifecycles
    for rc in lifecycles:
        rules = json.loads(after(rc)["policy"])["rules"]
        assert [
            (r["selection"]["tagStatus"], r["selection"]["countType"], r["action"]["type"])
            for r in rules
        ] == [("any", "imageCountMoreThan", "expire")], rc["address"]
        kept = rules[0]["selection"]["countNumber"]
        assert kept >= RELEASES_KEPT[name] * MANIFESTS_PER_RELEASE, (rc["address"], kept)


# --- CI identity ------------------------------------------------------------------


# The push role of each environment, and staging's deploy role (no push right).
PUSH_ROLE = "module.platform.module.ci."
DEPLOY_ROLE = "module.platform.module.ci_deploy[0]."
# Every ECR action that writes into a repository (an image, a layer, a tag, a deletion).
ECR_WRITES = {
    "ecr:PutImage",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:BatchDeleteImage",
    "ecr:PutImageTagMutability",
    "ecr:ReplicateImage",
}


def ci_trust(plan: dict[str, Any], role: str = PUSH_ROLE) -> dict[str, Any]:
    found = after(one(plan, "aws_iam_role", role))
    statements = json.loads(found["assume_role_policy"])["Statement"]
    assert len(statements) == 1
    return statements[0]


def ci_policy(plan: dict[str, Any], role: str = PUSH_ROLE) -> dict[str, dict[str, Any]]:
    policy = json.loads(after(one(plan, "aws_iam_role_policy", role))["policy"])
    return {s["Sid"]: s for s in policy["Statement"]}


def actions(statement: dict[str, Any]) -> set[str]:
    found = statement.get("Action", [])
    return {found} if isinstance(found, str) else set(found)


# The GitHub Environment of dev.yml's build and sign jobs (environments/staging/main.tf).
PUSH_ENVIRONMENT = "dev-push"


def trusted_subjects(plan: dict[str, Any], role: str = PUSH_ROLE) -> list[str]:
    subjects: list[str] = ci_trust(plan, role)["Condition"]["StringEquals"][
        "token.actions.githubusercontent.com:sub"
    ]
    return subjects


@pytest.mark.parametrize(
    ("name", "role", "subjects"),
    [
        ("staging", PUSH_ROLE, [f"repo:{REPOSITORY}:environment:{PUSH_ENVIRONMENT}"]),
        (
            "staging",
            DEPLOY_ROLE,
            [
                f"repo:{REPOSITORY}:environment:staging",
                f"repo:{REPOSITORY}:ref:refs/heads/dev",
            ],
        ),
        ("production", PUSH_ROLE, [f"repo:{REPOSITORY}:environment:production"]),
    ],
    ids=["staging push role", "staging deploy role", "production role"],
)
def test_oidc_trust_limited_to_this_repository_and_environment(
    plans: dict[str, dict[str, Any]], name: str, role: str, subjects: list[str]
) -> None:
    trust = ci_trust(plans[name], role)
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"] == {"Federated": GITHUB_OIDC}
    # Exact matches only: StringLike would let `repo:x/*` or another branch in.
    assert set(trust["Condition"]) == {"StringEquals"}
    cond = trust["Condition"]["StringEquals"]
    assert cond["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    assert cond["token.actions.githubusercontent.com:sub"] == subjects
    assert not any("*" in s or "?" in s for s in subjects)


def test_only_production_role_pushes_to_prod_and_deploys_production(
    plans: dict[str, dict[str, Any]],
) -> None:
    prod_repo = after(one(plans["production"], "aws_ecr_repository"))["name"]
    dev_repo = after(one(plans["staging"], "aws_ecr_repository"))["name"]
    prod_arn = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{prod_repo}"
    dev_arn = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/{dev_repo}"

    prod = ci_policy(plans["production"])
    assert prod["PushImages"]["Resource"] == [prod_arn]
    assert prod["ReadImages"]["Resource"] == [dev_arn], "promotion reads the dev registry"
    assert not any(a in prod["ReadImages"]["Action"] for a in ("ecr:PutImage",))
    assert prod["FindCluster"]["Resource"] == [
        f"arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/comments-api-production"
    ]

    staging = ci_policy(plans["staging"])
    assert staging["PushImages"]["Resource"] == [dev_arn]
    assert "ReadImages" not in staging
    assert prod_arn not in json.dumps(staging), "dev/staging never touches the prod registry"
    assert "comments-api-production" not in json.dumps(staging)

    # Production's one job promotes and deploys with its role; staging deploys with the
    # role that cannot push (its push role has no access entry at all).
    for name, role in (("production", PUSH_ROLE), ("staging", DEPLOY_ROLE)):
        assoc = after(one(plans[name], "aws_eks_access_policy_association", role))
        assert assoc["access_scope"][0]["type"] == "namespace"
        assert assoc["access_scope"][0]["namespaces"] == [f"comments-{name}"]
        assert assoc["cluster_name"] == f"comments-api-{name}"
    assert not changes(plans["staging"], "aws_eks_access_entry", PUSH_ROLE)
    assert "FindCluster" not in staging


def test_production_ci_role_is_in_the_group_the_cluster_rbac_binds(
    plans: dict[str, dict[str, Any]],
) -> None:
    """AmazonEKSAdminPolicy is a fixed rule set of the built-in API groups: main.yml's apply
    of the production-aws overlay also needs its custom resources (ServiceMonitor,
    PrometheusRule, SecretStore, ExternalSecret) and its Namespace, which the RBAC of
    deploy/k8s/cluster-rbac grants to one Kubernetes group. The production role's access
    entry must put it in exactly that group, in the namespace its policy is scoped to
    (tests/deploy/test_eks_rbac.py checks the rules against the overlay)."""
    rbac_file = TF_DIR.parent / "k8s" / "cluster-rbac" / "rbac.yaml"
    rbac = [d for d in yaml.safe_load_all(rbac_file.read_text()) if d]
    bound = {
        s["name"]
        for d in rbac
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in d["subjects"]
        if s["kind"] == "Group"
    }
    assert len(bound) == 1, bound
    plan = plans["production"]
    entry = after(one(plan, "aws_eks_access_entry", PUSH_ROLE))
    assert entry.get("kubernetes_groups") == sorted(bound)
    assert not any(g.startswith("system:") for g in entry["kubernetes_groups"])
    assoc = after(one(plan, "aws_eks_access_policy_association", PUSH_ROLE))
    assert assoc["policy_arn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"
    namespaced = {d["metadata"]["namespace"] for d in rbac if d["kind"] in ("Role", "RoleBinding")}
    assert namespaced == set(assoc["access_scope"][0]["namespaces"])


def test_roots_output_the_kubernetes_group_of_the_deploying_role(env: tuple[str, dict]) -> None:
    """`ci_rbac_group` lets the admin compare the access entry's group with the
    subject deploy/k8s/cluster-rbac binds (docs/terraform.md, section 5) without reading
    the state: it must be the group of the entry of the role that deploys (staging's
    deploy role, production's one role), and in production the one the RBAC binds."""
    name, plan = env
    role = DEPLOY_ROLE if name == "staging" else PUSH_ROLE
    entry = after(one(plan, "aws_eks_access_entry", role))
    output = plan["planned_values"]["outputs"]["ci_rbac_group"]["value"]
    assert [output] == entry["kubernetes_groups"]
    if name == "production":
        rbac_file = TF_DIR.parent / "k8s" / "cluster-rbac" / "rbac.yaml"
        rbac = [d for d in yaml.safe_load_all(rbac_file.read_text()) if d]
        assert {
            s["name"]
            for d in rbac
            if d["kind"] in ("RoleBinding", "ClusterRoleBinding")
            for s in d["subjects"]
        } == {output}


def test_staging_jobs_that_do_not_push_get_a_role_that_cannot(
    plans: dict[str, dict[str, Any]],
) -> None:
    """dev.yml's E2E job (and the scan gate) only pull: with the push role, a compromised
    test step could put an image or a signature into the dev registry that main.yml then
    promotes. Their role has no write action (and does not reach the push role: the
    test below)."""
    plan = plans["staging"]
    dev_arn = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/comments-api/dev"
    deploy = ci_policy(plan, DEPLOY_ROLE)
    granted = set().union(*(actions(s) for s in deploy.values()))
    assert not granted & ECR_WRITES, granted & ECR_WRITES
    assert not any(a.endswith("*") for a in granted), granted
    assert set(deploy) == {"RegistryLogin", "ReadImages", "FindCluster"}
    assert deploy["ReadImages"]["Resource"] == [dev_arn]
    role = after(one(plan, "aws_iam_role", DEPLOY_ROLE))["name"]
    assert role == "comments-api-ci-staging-deploy"
    outputs = plan["configuration"]["root_module"]["outputs"]
    assert "module.platform.ci_deploy_role_arn" in str(outputs["ci_deploy_role_arn"])
    # Production has one job, which must push (the promotion): no second role there.
    assert not changes(plans["production"], "aws_iam_role", "module.platform.module.ci_deploy")


def test_staging_push_role_is_out_of_reach_of_the_jobs_that_do_not_push(
    plans: dict[str, dict[str, Any]],
) -> None:
    """dev.yml's E2E job has `id-token: write` (for its own role) and runs test code: a
    step of it can request an OIDC token, whose subject is ref:refs/heads/dev, and assume
    any role trusting that subject by its ARN. So the push role trusts only the subject
    of the push jobs' GitHub Environment, which E2E does not name, and the deploy role
    (E2E's) does not trust that environment."""
    plan = plans["staging"]
    push = trusted_subjects(plan, PUSH_ROLE)
    deploy = trusted_subjects(plan, DEPLOY_ROLE)
    push_subject = f"repo:{REPOSITORY}:environment:{PUSH_ENVIRONMENT}"
    assert push == [push_subject]
    assert not [s for s in push if ":ref:" in s], "a branch's jobs would all reach the push role"
    assert push_subject not in deploy
    assert not set(push) & set(deploy), "a token admitted by both roles reaches the push role"
    assert f"repo:{REPOSITORY}:ref:refs/heads/dev" in deploy, "E2E and the scan gate"
    # The same lists are what the root hands over (outputs ci_*trusted_subjects).
    known = plan["planned_values"]["outputs"]
    assert known["ci_trusted_subjects"]["value"] == push
    assert known["ci_deploy_trusted_subjects"]["value"] == deploy


@pytest.mark.parametrize(
    ("name", "role"),
    [("staging", DEPLOY_ROLE), ("production", PUSH_ROLE)],
    ids=["dev.yml scan job", "main.yml release job"],
)
def test_scan_gates_can_read_the_findings_they_gate(
    plans: dict[str, dict[str, Any]], name: str, role: str
) -> None:
    """Both workflows wait for the dev repository's scan of the digest and read its
    findings before signing (dev.yml) and promoting (main.yml)."""
    dev_arn = f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/comments-api/dev"
    granted = [s for s in ci_policy(plans[name], role).values() if dev_arn in s.get("Resource", [])]
    assert granted, f"{name}: no statement on {dev_arn}"
    # The image index lists the scanned platform image (BatchGetImage).
    for needed in ("ecr:DescribeImageScanFindings", "ecr:BatchGetImage"):
        assert any(needed in actions(s) for s in granted), f"{name}: {needed}"


# --- deletion protection ----------------------------------------------------------


def test_production_database_protected_with_final_snapshot(
    plans: dict[str, dict[str, Any]],
) -> None:
    db = after(one(plans["production"], "aws_db_instance"))
    assert db["deletion_protection"] is True
    assert db["skip_final_snapshot"] is False
    assert db["final_snapshot_identifier"] == "comments-api-production-final"
    assert db["delete_automated_backups"] is False
    assert db["backup_retention_period"] >= 14


def test_staging_destroy_leaves_no_backups_under_a_deleted_key(
    plans: dict[str, dict[str, Any]],
) -> None:
    """Staging's database key has no guard (next test): `terraform destroy` schedules it
    for deletion. Automated backups kept past the destroy would be encrypted under it, so
    unreadable at once and lost after the 30-day window, while still billed. Staging's
    data is disposable: its backups go with the instance, as its final snapshot does."""
    db = after(one(plans["staging"], "aws_db_instance"))
    assert db["skip_final_snapshot"] is True
    assert db["delete_automated_backups"] is True
    assert not changes(plans["staging"], "terraform_data", "keep_key")
    # What a destroy keeps is exactly what a guarded key still decrypts.
    for name, plan in plans.items():
        for rc in changes(plan, "aws_db_instance"):
            keeps = (
                not after(rc)["delete_automated_backups"] or not after(rc)["skip_final_snapshot"]
            )
            guarded = changes(plan, "terraform_data", "module.database.module.key.")
            assert keeps == bool(guarded), (name, rc["address"])


# The guard modules/kms-key plans for a key that must outlive its stack (prevent_destroy).
KEY_GUARD = "terraform_data.keep_key[0]"


def test_keys_of_data_that_outlives_a_destroy_cannot_be_destroyed(
    plans: dict[str, dict[str, Any]],
) -> None:
    """A destroy of production takes the final snapshot and keeps the automated backups,
    encrypted with the database's key; in the same run it scheduled that key for deletion
    (disabled at once, gone after 30 days), so the snapshot could never be restored. The
    state key is the same for every environment's state. Both keys carry the guard whose
    prevent_destroy makes Terraform refuse any plan destroying or replacing them."""
    guarded = {
        "production": "module.platform.module.database.module.key.",
        "bootstrap": "module.state.module.key.",
    }
    for name, plan in plans.items():
        guards = [rc["address"] for rc in changes(plan, "terraform_data", "keep_key")]
        expected = [guarded[name] + KEY_GUARD] if name in guarded else []
        # Staging's database is disposable (no final snapshot): its key goes with it.
        assert guards == expected, (name, guards)
    # The guard is replaced, so refused, whenever its key is: it follows the key's ARN.
    key_module = platform_calls(plans["production"])["database"]["module"]["module_calls"]["key"]
    guard = next(
        r for r in key_module["module"]["resources"] if r["address"] == "terraform_data.keep_key"
    )
    assert "aws_kms_key.this.arn" in guard["expressions"]["triggers_replace"]["references"]
    # The plan JSON carries no lifecycle settings: read the guard's from the module.
    source = (TF_DIR / "modules" / "kms-key" / "main.tf").read_text()
    block = re.search(r'^resource "terraform_data" "keep_key" \{\n(.*?)^\}', source, re.M | re.S)
    assert block, "modules/kms-key has no terraform_data.keep_key"
    assert re.search(r"^\s+prevent_destroy\s*=\s*true$", block.group(1), re.M)


# --- tags and secrets hygiene -----------------------------------------------------


def test_every_taggable_resource_is_tagged(plans: dict[str, dict[str, Any]]) -> None:
    for name, plan in plans.items():
        tagged = 0
        for rc in plan["resource_changes"]:
            values = after(rc)
            if "tags_all" not in values:
                continue  # the resource type takes no tags
            tags = values["tags_all"] or {}
            assert REQUIRED_TAGS - {"Environment"} <= set(tags), rc["address"]
            if name != "bootstrap":
                assert tags["Environment"] == name, rc["address"]
                assert tags["Repository"] == REPOSITORY, rc["address"]
            else:
                assert tags["Component"] == "terraform-state", rc["address"]
            tagged += 1
        assert tagged >= (4 if name == "bootstrap" else 40), f"{name}: {tagged} tagged"


def test_no_secret_in_variables_or_outputs(env: tuple[str, dict]) -> None:
    _, plan = env
    pattern = re.compile(r"password|secret_key|access_key|token", re.IGNORECASE)
    assert not [v for v in plan["variables"] if pattern.search(v)]
    assert not [o for o in plan["planned_values"].get("outputs", {}) if pattern.search(o)]
    outputs = plan["configuration"]["root_module"]["outputs"]
    assert all(o.get("description") for o in outputs.values()), "every output is documented"


def test_outputs_feed_the_kubernetes_overlays(env: tuple[str, dict]) -> None:
    name, plan = env
    outputs = plan["configuration"]["root_module"]["outputs"]
    for needed in (
        "cluster_name",
        "kubeconfig_command",
        "image_repository_url",
        "database_address",
        "database_secret_arn",
        "database_url_template",
        "database_subnet_cidrs",
        "secrets_reader_role_arn",
        "ci_role_arn",
    ):
        assert needed in outputs, f"{name}: output {needed} missing"
    known = plan["planned_values"]["outputs"]
    assert known["kubeconfig_command"]["value"] == (
        f"aws eks update-kubeconfig --region eu-west-1 --name comments-api-{name}"
        f" --alias comments-api-{name}"
    )


def test_load_balancer_controller_values_come_from_the_plan(env: tuple[str, dict]) -> None:
    """The AWS Load Balancer Controller (installed by hand, docs/terraform.md) must be told
    its cluster, region and VPC: the nodes' IMDSv2 hop limit of 1 keeps it from reading
    them from the instance metadata. The roots output them as Helm values, taken from the
    cluster and the VPC this plan creates."""
    _, plan = env
    change = plan["output_changes"]["aws_load_balancer_controller_values"]
    cluster = after(one(plan, "aws_eks_cluster"))
    assert change["after"] == {
        "clusterName": cluster["name"],
        "region": plan["planned_values"]["outputs"]["region"]["value"],
    }
    # The VPC ID exists after the apply only: its wiring is in the configuration.
    assert change["after_unknown"] == {"vpcId": True}
    root = plan["configuration"]["root_module"]
    assert "module.platform.vpc_id" in root["outputs"]["vpc_id"]["expression"]["references"]
    platform = root["module_calls"]["platform"]["module"]
    assert (
        "module.platform.aws_load_balancer_controller_values"
        in (root["outputs"]["aws_load_balancer_controller_values"]["expression"]["references"])
    )
    refs = platform["outputs"]["aws_load_balancer_controller_values"]["expression"]["references"]
    assert {"module.network.vpc_id", "module.cluster.cluster_name", "var.region"} <= set(refs)
    assert platform["outputs"]["vpc_id"]["expression"]["references"][0] == "module.network.vpc_id"
    network = platform["module_calls"]["network"]["module"]
    assert network["outputs"]["vpc_id"]["expression"]["references"][0] == "aws_vpc.this.id"
    # ... the VPC of the cluster's subnets.
    subnets = next(r for r in network["resources"] if r["address"] == "aws_subnet.private")
    assert subnets["expressions"]["vpc_id"]["references"][0] == "aws_vpc.this.id"


def test_load_balancer_controller_role_needs_the_controllers_policy(env: tuple[str, dict]) -> None:
    """The controller's IAM policy changes with each release, so the operator passes the
    one of the release they install (docs/terraform.md); the committed roots, planned
    without it, create no role for the controller and stay plannable. Given, it travels
    root -> platform -> cluster, where modules/cluster/tests check the role it makes."""
    name, plan = env
    assert plan["variables"]["load_balancer_controller_policy_json"]["value"] == ""
    for rtype in ("aws_iam_role", "aws_iam_policy", "aws_iam_role_policy_attachment"):
        assert not changes(plan, rtype, "load_balancer_controller"), f"{name}: {rtype}"
    assert (
        plan["planned_values"]["outputs"]["load_balancer_controller_role_arn"].get("value") is None
    )
    root = plan["configuration"]["root_module"]
    call = root["module_calls"]["platform"]
    assert call["expressions"]["load_balancer_controller_policy_json"]["references"] == [
        "var.load_balancer_controller_policy_json"
    ]
    cluster = call["module"]["module_calls"]["cluster"]
    assert cluster["expressions"]["load_balancer_controller_policy_json"]["references"] == [
        "var.load_balancer_controller_policy_json"
    ]
    refs = root["outputs"]["load_balancer_controller_role_arn"]["expression"]["references"]
    assert "module.platform.load_balancer_controller_role_arn" in refs
    platform_refs = call["module"]["outputs"]["load_balancer_controller_role_arn"]["expression"][
        "references"
    ]
    assert "module.cluster.load_balancer_controller_role_arn" in platform_refs
    # The role the values annotate is the one the cluster module creates.
    values_refs = call["module"]["outputs"]["aws_load_balancer_controller_values"]["expression"][
        "references"
    ]
    assert "module.cluster.load_balancer_controller_role_arn" in values_refs
    resources = {r["address"]: r for r in cluster["module"]["resources"]}
    attachment = resources["aws_iam_role_policy_attachment.load_balancer_controller"]["expressions"]
    assert "aws_iam_policy.load_balancer_controller" in attachment["policy_arn"]["references"]
    policy = resources["aws_iam_policy.load_balancer_controller"]["expressions"]["policy"]
    assert policy["references"] == ["var.load_balancer_controller_policy_json"]


def test_every_variable_and_output_is_documented(plans: dict[str, dict[str, Any]]) -> None:
    def walk(module: dict[str, Any], where: str) -> list[str]:
        missing = [
            f"{where} variable {name}"
            for name, var in module.get("variables", {}).items()
            if not var.get("description")
        ]
        missing += [
            f"{where} output {name}"
            for name, out in module.get("outputs", {}).items()
            if not out.get("description")
        ]
        for call_name, call in module.get("module_calls", {}).items():
            missing += walk(call["module"], f"{where}/{call_name}")
        return missing

    for name, plan in plans.items():
        root = plan["configuration"]["root_module"]
        calls = root["module_calls"] if name == "bootstrap" else platform_calls(plan)
        assert len(calls) >= (1 if name == "bootstrap" else 6)
        assert walk(root, name) == []


def test_every_variable_is_typed() -> None:
    # The plan JSON carries no types, so read the sources: each top-level variable block
    # (it ends at the first closing brace in column 0) must declare one.
    blocks = 0
    for path in sorted(TF_DIR.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        for match in re.finditer(r'^variable "(\w+)" \{\n(.*?)^\}', path.read_text(), re.M | re.S):
            assert re.search(r"^  type\s+=", match.group(2), re.M), f"{path}: {match.group(1)}"
            blocks += 1
    assert blocks > 80, blocks


def test_rds_overlay_parameters_match_the_production_plan(plans: dict[str, dict[str, Any]]) -> None:
    """deploy/k8s/overlays/production-aws carries example values from the example tfvars;
    those the plan already knows must be the plan's (the app's egress to RDS in particular:
    a wrong range would silently cut the app off its database)."""
    params_file = TF_DIR.parent / "k8s" / "overlays" / "production-aws" / "aws-parameters.yaml"
    params = yaml.safe_load(params_file.read_text())["data"]
    known = plans["production"]["planned_values"]["outputs"]
    assert [params[f"database-cidr-{z}"] for z in "abc"] == known["database_subnet_cidrs"]["value"]
    subnets = sorted(
        after(rc)["cidr_block"] for rc in changes(plans["production"], "aws_subnet", "private")
    )
    assert sorted(known["database_subnet_cidrs"]["value"]) == subnets
    assert params["region"] == known["region"]["value"]
    assert params["secrets-reader-role-arn"] == (
        f"arn:aws:iam::{ACCOUNT}:role/"
        + after(one(plans["production"], "aws_iam_role", "secrets_reader"))["name"]
    )


def test_no_role_gets_iam_full_access(env: tuple[str, dict]) -> None:
    # checkov's CKV2_AWS_56 cannot follow values through the platform module, so this says it.
    _, plan = env
    attachments = changes(plan, "aws_iam_role_policy_attachment")
    assert attachments, "the plan attaches no managed policy: the address filter is stale"
    for rc in attachments:
        assert not str(after(rc).get("policy_arn", "")).endswith("/IAMFullAccess"), rc["address"]
    for rtype in ("aws_iam_role_policy", "aws_iam_policy"):
        for rc in changes(plan, rtype):
            document = after(rc).get("policy")
            if not isinstance(document, str):
                continue  # computed at apply time; nothing to read offline
            for statement in json.loads(document)["Statement"]:
                actions = statement.get("Action", [])
                actions = [actions] if isinstance(actions, str) else actions
                if statement.get("Effect") == "Allow":
                    assert "iam:*" not in actions, rc["address"]
                    assert "*" not in actions, rc["address"]
