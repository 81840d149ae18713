"""The ECR scan gate of both workflows, and the role that cannot push.

dev.yml signs a digest (and main.yml promotes it) only once ECR's scan of it completed
without findings at `SCAN_FAIL_SEVERITY` (default CRITICAL) or above. Both run the same
script, scripts/ecr-scan-gate.sh: the gate steps' `run:` lines run here as the runner runs
them (`bash -eo pipefail`, from the checkout), with the real `jq` and a stand-in `aws` that answers
from a registry described in JSON (no AWS can be reached from here).

The jobs of dev.yml that do not push (E2E, the scan gate) assume the staging deploy role,
which has no ECR write action (tests/terraform checks the policy in the plan)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT
from .test_tools import AWS_CREDENTIALS, job_uses, steps, workflows
from .workflow_steps import DEV_IMAGE, REPOSITORY, run_with_registry

pytestmark = pytest.mark.k8s

INDEX = "sha256:" + "1" * 64
IMAGE = "sha256:" + "2" * 64  # linux/amd64
ATTESTATION = "sha256:" + "3" * 64  # buildx's SBOM/provenance manifest
GATE = "scripts/ecr-scan-gate.sh"

# The stand-in `aws`: the subcommands the gate calls, answered from $REGISTRY (manifests
# by digest, scan status and severity counts by digest). Anything else fails, as an
# unexpected call should.
FAKE_AWS = r"""
def digest(name):
    value = opt(name)
    assert value.startswith("imageDigest="), value
    return value.removeprefix("imageDigest=")


if registry.get("denied"):
    sys.exit("An error occurred (AccessDeniedException): not authorized")
if opt("--repository-name") != "comments-api/dev":
    sys.exit("An error occurred (RepositoryNotFoundException): " + opt("--repository-name"))
if args[:2] == ["ecr", "batch-get-image"]:
    d = digest("--image-ids")
    if d in registry["manifests"]:
        manifest = json.dumps(registry["manifests"][d])
        found = {"images": [{"imageManifest": manifest}], "failures": []}
    else:
        found = {"images": [], "failures": [{"failureCode": "ImageNotFound"}]}
    print(json.dumps(found))
elif args[:3] == ["ecr", "wait", "image-scan-complete"]:
    status = registry["scans"].get(digest("--image-id"), {}).get("status", "IN_PROGRESS")
    if status == "FAILED":
        sys.exit("Waiter ImageScanComplete failed: Waiter encountered a terminal failure state")
    if status != "COMPLETE":
        sys.exit("Waiter ImageScanComplete failed: Max attempts exceeded")
elif args[:2] == ["ecr", "describe-image-scan-findings"]:
    scan = registry["scans"][digest("--image-id")]
    findings = {"findings": []}
    if scan.get("counts") is not None:
        findings["findingSeverityCounts"] = scan["counts"]
    status = {"status": scan["status"]}
    print(json.dumps({"imageScanStatus": status, "imageScanFindings": findings}))
else:
    sys.exit("unexpected aws call: " + " ".join(args))
"""


def index(*children: tuple[str, str]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "platform": {"os": os_, "architecture": "unknown" if os_ == "unknown" else "amd64"},
            }
            for digest, os_ in children
        ],
    }


IMAGE_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"digest": "sha256:" + "4" * 64},
    "layers": [],
}


def registry(counts: dict[str, int] | None, status: str = "COMPLETE") -> dict[str, Any]:
    """What buildx pushes: an index of the platform image and its attestation manifest;
    ECR scans the image (the attestation holds no packages and is not scannable)."""
    return {
        "manifests": {
            INDEX: index((IMAGE, "linux"), (ATTESTATION, "unknown")),
            IMAGE: IMAGE_MANIFEST,
            ATTESTATION: IMAGE_MANIFEST,
        },
        "scans": {
            IMAGE: {"status": status, "counts": counts},
            ATTESTATION: {"status": "FAILED", "counts": None},
        },
    }


def gate_steps() -> dict[str, dict[str, Any]]:
    """The gate step of each workflow (the one that runs the gate script)."""
    found = {}
    for name, flow in workflows().items():
        gates = [s for s in steps(flow) if GATE in s.get("run", "")]
        if gates:
            (found[name],) = gates
    return found


@pytest.fixture(params=["dev.yml", "main.yml"])
def gate(request: pytest.FixtureRequest) -> dict[str, Any]:
    return gate_steps()[request.param]


def run_gate(
    step: dict[str, Any],
    tmp_path: Path,
    state: dict[str, Any],
    severity: str = "CRITICAL",
    digest: str = INDEX,
    dev_image: str = DEV_IMAGE,
) -> tuple[int, str, list[str]]:
    env = {"DEV_IMAGE": dev_image, "DIGEST": digest, "SCAN_FAIL_SEVERITY": severity}
    # The runner runs a step in the checkout of the repository.
    in_checkout = {**step, "run": f"cd {shlex.quote(str(ROOT))}\n{step['run']}"}
    done = run_with_registry(in_checkout, tmp_path, env, state, {"aws": FAKE_AWS})
    return done.code, done.out, done.calls


# --- where the gate runs ----------------------------------------------------------------


def test_both_workflows_call_the_gate_script() -> None:
    """One gate, two places: each workflow's gate step runs the script, from a checkout
    of the repository made before it, with the same settings."""
    assert os.access(ROOT / GATE, os.X_OK), f"{GATE} is not executable"
    flows = workflows()
    gates = gate_steps()
    assert set(gates) == {"dev.yml", "main.yml"}
    for name, step in gates.items():
        assert step["run"].strip() == GATE, name
        assert step["env"]["SCAN_FAIL_SEVERITY"] == "${{ vars.SCAN_FAIL_SEVERITY || 'CRITICAL' }}"
        # `aws ecr wait` gives up after 5 minutes; the step's timeout bounds it too.
        assert 0 < step["timeout-minutes"] <= 7, name
        # DEV_IMAGE for every job of the workflow; DIGEST from the job (dev.yml) or from an
        # earlier step through GITHUB_ENV (main.yml, tested in test_tools).
        assert flows[name]["env"]["DEV_IMAGE"] == "${{ vars.DEV_IMAGE }}", name
        (job,) = [j for j in flows[name]["jobs"].values() if step in j["steps"]]
        (checkout,) = job_uses(job, "actions/checkout@")
        assert job["steps"].index(checkout) < job["steps"].index(step), name
        assert checkout["with"]["persist-credentials"] is False, name


def test_main_gates_before_it_promotes() -> None:
    job = workflows()["main.yml"]["jobs"]["release"]
    runs = [s.get("run", "") for s in job["steps"]]
    verify = next(i for i, r in enumerate(runs) if "cosign verify" in r)
    gate = next(i for i, r in enumerate(runs) if GATE in r)
    copy_ = next(i for i, r in enumerate(runs) if "crane copy" in r)
    digest = next(i for i, r in enumerate(runs) if 'echo "DIGEST=' in r)
    assert digest < verify < gate < copy_, "digest, signature, scan gate, then the promotion"
    (aws,) = job_uses(job, AWS_CREDENTIALS)
    assert job["steps"].index(aws) < gate


def test_dev_signs_only_what_passed_the_gate() -> None:
    dev = workflows()["dev.yml"]
    (gate_job,) = [
        job_id
        for job_id, job in dev["jobs"].items()
        if any(GATE in s.get("run", "") for s in job.get("steps", []))
    ]
    sign = dev["jobs"]["sign"]
    assert gate_job in sign["needs"], "a digest with blocking findings stays unsigned"
    assert "if" not in sign
    job = dev["jobs"][gate_job]
    assert job["needs"] == "build"
    assert job["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    (aws,) = job_uses(job, AWS_CREDENTIALS)
    assert aws["with"]["role-to-assume"] == "${{ vars.DEV_DEPLOY_ROLE_ARN }}"
    assert job["timeout-minutes"] > job["steps"][-1]["timeout-minutes"]


# --- the jobs that do not push cannot push ------------------------------------------------


def test_only_the_jobs_that_push_assume_the_push_role() -> None:
    """E2E runs test code beside its AWS credentials: with the push role, a compromised
    step could put an image or a signature into the dev registry that main.yml promotes.
    The push role goes only to the build (docker push) and the sign job (cosign writes the
    signature into the same repository; IAM cannot limit ECR writes by tag)."""
    dev = workflows()["dev.yml"]
    roles = {}
    for job_id, job in dev["jobs"].items():
        for step in job_uses(job, AWS_CREDENTIALS):
            roles[job_id] = step["with"]["role-to-assume"]
    assert roles["e2e"] == "${{ vars.DEV_DEPLOY_ROLE_ARN }}"
    for job_id, role in roles.items():
        job = dev["jobs"][job_id]
        runs = "\n".join(s.get("run", "") for s in job["steps"])
        pushes = bool(job_uses(job, "docker/build-push-action@")) or "cosign sign" in runs
        expected = "DEV_ROLE_ARN" if pushes else "DEV_DEPLOY_ROLE_ARN"
        assert role == f"${{{{ vars.{expected} }}}}", (job_id, role)
    assert set(roles) >= {"build", "e2e", "sign"}


# --- what the gate does -------------------------------------------------------------------


def test_gate_passes_below_the_threshold_and_gates_the_platform_image(
    gate: dict[str, Any], tmp_path: Path
) -> None:
    code, out, calls = run_gate(gate, tmp_path, registry({"HIGH": 3, "MEDIUM": 7}))
    assert code == 0, out
    # The counts are in the log.
    assert f"ECR scan of {IMAGE}: " in out
    assert '"HIGH":3' in out
    waited = [c for c in calls if "wait image-scan-complete" in c]
    # The attestation manifest of the index is not scannable: waiting on it would fail.
    assert waited == [
        f"aws ecr wait image-scan-complete --repository-name {REPOSITORY}"
        f" --image-id imageDigest={IMAGE}"
    ]


@pytest.mark.parametrize(
    ("severity", "counts", "blocked"),
    [
        ("CRITICAL", {"CRITICAL": 1, "LOW": 4}, "1 CRITICAL"),
        ("HIGH", {"HIGH": 2}, "2 HIGH"),
        ("HIGH", {"CRITICAL": 1}, "1 CRITICAL"),
        ("LOW", {"LOW": 5, "INFORMATIONAL": 9}, "5 LOW"),
    ],
)
def test_gate_fails_at_the_threshold_and_above(
    gate: dict[str, Any], tmp_path: Path, severity: str, counts: dict[str, int], blocked: str
) -> None:
    code, out, _ = run_gate(gate, tmp_path, registry(counts), severity=severity)
    assert code == 1, out
    assert f"has {blocked} finding(s)" in out
    assert f"stops at {severity} and above" in out


@pytest.mark.parametrize(
    ("severity", "counts"),
    [("HIGH", {"MEDIUM": 2, "UNDEFINED": 1}), ("CRITICAL", None), ("MEDIUM", {})],
    ids=["below HIGH", "no findings (no counts)", "empty counts"],
)
def test_gate_passes_without_findings_at_the_threshold(
    gate: dict[str, Any], tmp_path: Path, severity: str, counts: dict[str, int] | None
) -> None:
    code, out, _ = run_gate(gate, tmp_path, registry(counts), severity=severity)
    assert code == 0, out


@pytest.mark.parametrize(
    ("state", "said"),
    [
        (registry({}, status="FAILED"), "did not complete"),
        (registry({}, status="IN_PROGRESS"), "did not complete"),
        ({"manifests": {}, "scans": {}}, "is not in the registry"),
        ({**registry({}), "denied": True}, "AccessDeniedException"),
    ],
    ids=["scan failed", "scan never completed", "digest not in the registry", "access denied"],
)
def test_gate_fails_closed(
    gate: dict[str, Any], tmp_path: Path, state: dict[str, Any], said: str
) -> None:
    """Whatever keeps the findings from being read stops the release: nothing is
    signed or promoted unscanned."""
    code, out, calls = run_gate(gate, tmp_path, state)
    assert code != 0, out
    assert said in out
    assert not [c for c in calls if "describe-image-scan-findings" in c]


def test_gate_reads_a_single_image_manifest_directly(gate: dict[str, Any], tmp_path: Path) -> None:
    state = {
        "manifests": {IMAGE: IMAGE_MANIFEST},
        "scans": {IMAGE: {"status": "COMPLETE", "counts": {"CRITICAL": 2}}},
    }
    code, out, _ = run_gate(gate, tmp_path, state, digest=IMAGE)
    assert code == 1
    assert "has 2 CRITICAL finding(s)" in out


@pytest.mark.parametrize(
    ("severity", "digest", "dev_image"),
    [
        ("SEVERE", INDEX, DEV_IMAGE),
        ("", INDEX, DEV_IMAGE),
        ("CRITICAL", "", DEV_IMAGE),
        ("CRITICAL", "sha256:ab", DEV_IMAGE),
        ("CRITICAL", INDEX, ""),
    ],
)
def test_gate_checks_its_settings_before_any_call(
    gate: dict[str, Any], tmp_path: Path, severity: str, digest: str, dev_image: str
) -> None:
    code, out, calls = run_gate(
        gate,
        tmp_path,
        registry({"CRITICAL": 1}),
        severity=severity,
        digest=digest,
        dev_image=dev_image,
    )
    assert code == 1, out
    assert calls == [], calls
    assert "::error::" in out
