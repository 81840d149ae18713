"""dev.yml's build job builds each commit once, re-runs included.

The dev ECR repository has immutable tags and the build is not bit-reproducible: a second
build of a commit (GitHub's "re-run all jobs" after a flaky E2E run, or the commit pushed
to `dev` again) gets another digest, and ECR refuses its push under the commit's tag, so
the run failed although the commit's image was there. The job now looks the tag up first
and builds only when ECR says it does not exist.

The lookup step's script runs here as the runner runs it (`bash -eo pipefail`), with the real `jq`
and a stand-in `aws` answering from a registry described in JSON (no AWS can be reached
from here). The build itself (buildx) cannot run here: what decides whether it runs, and
which digest the job hands to E2E, scan and sign, are the step's `if:` and the job's
`outputs:`, evaluated below from the outputs the lookup wrote."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .test_tools import AWS_CREDENTIALS, job_uses, workflows
from .workflow_steps import DEV_IMAGE, REPOSITORY, SHA, run_with_registry, step_of

pytestmark = pytest.mark.k8s

PUSHED = "sha256:" + "ab" * 32  # the image an earlier run built for SHA
BUILT = "sha256:" + "cd" * 32  # what buildx would report for a new build
LOOKUP = "aws ecr describe-images"

# The stand-in `aws`: `ecr describe-images` over $REGISTRY ({"tags": {tag: digest}, and
# "error": the error code of a call that fails for another reason}), with the AWS CLI's
# error messages and exit code (254: the service answered with an error).
FAKE_AWS = r"""
def fail(code, message):
    operation = "when calling the DescribeImages operation"
    sys.stderr.write(f"\nAn error occurred ({code}) {operation}: {message}\n")
    sys.exit(254)


if args[:2] != ["ecr", "describe-images"] or opt("--output") != "json":
    sys.exit("unexpected aws call: " + " ".join(args))
if registry.get("error"):
    fail(registry["error"], "the call failed")
name = opt("--repository-name")
if name != "comments-api/dev":
    fail("RepositoryNotFoundException", f"The repository with name '{name}' does not exist")
tag = opt("--image-ids").removeprefix("imageTag=")
if tag not in registry["tags"]:
    image_id = f"{{imageDigest:'null', imageTag:'{tag}'}}"
    fail("ImageNotFoundException",
         f"The image with imageId {image_id} does not exist within the repository '{name}'")
detail = {"repositoryName": name, "imageDigest": registry["tags"][tag], "imageTags": [tag]}
print(json.dumps({"imageDetails": [detail]}))
"""


def build_job() -> dict[str, Any]:
    return workflows()["dev.yml"]["jobs"]["build"]


def evaluate(expression: str, outputs: dict[str, dict[str, str]]) -> str | bool:
    """The subset of GitHub's expressions these fields use: `steps.<id>.outputs.<name>`
    (empty when the step set nothing or did not run), `== ''`, `!= ''` and `||` (the first
    operand that is not empty). Anything else fails the test rather than be guessed."""
    inner = expression.strip().removeprefix("${{").removesuffix("}}").strip()
    value: str | bool = ""
    for operand in inner.split("||"):
        m = re.fullmatch(r"\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*(?:(==|!=)\s*'')?\s*", operand)
        assert m, f"not understood here: {expression}"
        found = outputs.get(m.group(1), {}).get(m.group(2), "")
        value = found if m.group(3) is None else (found == "") == (m.group(3) == "==")
        if value:
            return value
    return value


def run_job(
    tmp_path: Path, state: dict[str, Any], dev_image: str = DEV_IMAGE
) -> tuple[int, str, list[str], bool, str | bool]:
    """The lookup with the stand-in `aws`; its exit code and output, the aws calls, whether
    the build step would run after it, and the digest the job would hand on."""
    job = build_job()
    lookup = step_of(job, run=LOOKUP)
    env = {"DEV_IMAGE": dev_image, "SHA": SHA}
    done = run_with_registry(lookup, tmp_path, env, state, {"aws": FAKE_AWS})
    written = tmp_path / "github-output"
    lines = written.read_text().splitlines() if written.exists() else []
    outputs = {lookup["id"]: dict(line.split("=", 1) for line in lines)}
    build = step_of(job, uses="docker/build-push-action@")
    # A step's `if:` without a status function runs only after every earlier step passed.
    builds = done.code == 0 and evaluate(build["if"], outputs) is True
    if builds:
        outputs[build["id"]] = {"digest": BUILT}
    digest = evaluate(job["outputs"]["digest"], outputs) if done.code == 0 else ""
    return done.code, done.out, done.calls, builds, digest


def test_the_lookup_is_of_the_tag_the_build_pushes() -> None:
    """After the AWS credentials (the push role may describe images), before the build,
    and for the very tag the build pushes."""
    job = build_job()
    lookup = step_of(job, run=LOOKUP)
    build = step_of(job, uses="docker/build-push-action@")
    (aws,) = job_uses(job, AWS_CREDENTIALS)
    assert job["steps"].index(aws) < job["steps"].index(lookup) < job["steps"].index(build)
    assert lookup["env"]["SHA"] == "${{ github.sha }}"
    assert build["with"]["tags"] == "${{ env.DEV_IMAGE }}:${{ github.sha }}"
    assert build["with"]["push"] is True
    # buildx is set up only for a build.
    buildx = step_of(job, uses="docker/setup-buildx-action@")
    assert buildx["if"] == build["if"]
    # The later jobs test and sign the build job's output, whichever image it names.
    for job_id in ("e2e", "scan", "sign"):
        digest = workflows()["dev.yml"]["jobs"][job_id]["env"]["DIGEST"]
        assert digest == "${{ needs.build.outputs.digest }}", job_id


def test_a_rerun_does_nothing_of_the_build() -> None:
    """Only checkout, the credentials and the lookup run before the lookup's answer; every
    step after it (Python, the wheels, buildx, the build) runs only when it found nothing,
    so a re-run no longer spends minutes on wheels for an image it never builds."""
    job = build_job()
    lookup = step_of(job, run=LOOKUP)
    build = step_of(job, uses="docker/build-push-action@")
    at = job["steps"].index(lookup)
    before = [s.get("uses", s.get("name", "")).split("@")[0] for s in job["steps"][:at]]
    assert before == [
        "actions/checkout",
        "aws-actions/configure-aws-credentials",
        "aws-actions/amazon-ecr-login",
    ]
    after = job["steps"][at + 1 :]
    assert any("pip download" in s.get("run", "") for s in after), "the wheels come after"
    for step in after:
        assert step.get("if") == build["if"], step.get("uses", step.get("name"))


def test_tag_absent_the_commit_is_built(tmp_path: Path) -> None:
    code, out, calls, builds, digest = run_job(tmp_path, {"tags": {}})
    assert code == 0, out
    assert calls == [
        f"aws ecr describe-images --repository-name {REPOSITORY} --image-ids imageTag={SHA}"
        " --output json"
    ]
    assert builds, "no image for this commit yet: the build runs"
    assert digest == BUILT
    assert "building it" in out


def test_tag_present_the_build_is_skipped_and_its_digest_handed_on(tmp_path: Path) -> None:
    """A re-run of all jobs: building again would be refused at the immutable tag."""
    code, out, calls, builds, digest = run_job(tmp_path, {"tags": {SHA: PUSHED}})
    assert code == 0, out
    assert len(calls) == 1, calls
    assert not builds, "the commit's image exists: not built again"
    assert digest == PUSHED, "E2E, scan and sign get the image already pushed"
    assert f"is pushed already ({PUSHED})" in out


def test_another_commits_tag_does_not_count(tmp_path: Path) -> None:
    code, out, _, builds, digest = run_job(tmp_path, {"tags": {"beef" * 10: PUSHED}})
    assert code == 0, out
    assert builds
    assert digest == BUILT


@pytest.mark.parametrize(
    "state",
    [
        {"tags": {}, "error": "AccessDeniedException"},
        {"tags": {}, "error": "ThrottlingException"},
        {"tags": {SHA: PUSHED}, "error": "ExpiredTokenException"},
    ],
    ids=["access denied", "throttled", "expired credentials"],
)
def test_lookup_error_fails_the_job(tmp_path: Path, state: dict[str, Any]) -> None:
    """Only "not found" means "build": any other error leaves unknown whether the image
    exists, and nothing is built over that."""
    code, out, _, builds, digest = run_job(tmp_path, state)
    assert code != 0, out
    assert state["error"] in out, "aws's own message is in the log"
    assert "::error::cannot tell whether" in out
    assert not builds
    assert digest == ""
    # The build's `if:` has no status function that would run it after the failure.
    build = step_of(build_job(), uses="docker/build-push-action@")
    assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", build["if"])


def test_lookup_error_for_another_repository_fails_the_job(tmp_path: Path) -> None:
    """A DEV_IMAGE naming no repository is not "no image yet" either."""
    dev_image = DEV_IMAGE.replace("/dev", "/staging")
    code, out, _, builds, digest = run_job(tmp_path, {"tags": {}}, dev_image=dev_image)
    assert code != 0, out
    assert "RepositoryNotFoundException" in out
    assert not builds
    assert digest == ""


def test_a_tag_answer_that_is_not_a_digest_is_never_handed_on(tmp_path: Path) -> None:
    """The output reaches `IMAGE@DIGEST` references in E2E and sign: a digest, nothing
    else."""
    code, out, _, builds, digest = run_job(tmp_path, {"tags": {SHA: "sha256:ab\nbuilt=yes"}})
    assert code != 0, out
    assert "did not resolve to a sha256 digest" in out
    assert not builds
    assert digest == ""
    assert not (tmp_path / "github-output").exists()
