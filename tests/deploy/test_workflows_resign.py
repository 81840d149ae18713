"""Re-runs of the steps that write signatures: dev.yml's `sign` and main.yml's copy.

GitHub's "re-run failed jobs" (or the same commit pushed to `dev` again) runs `sign` for a
digest that is signed already, and a failed deployment's re-run runs the copy to the prod
repository again. Both repositories have immutable tags. What the pinned cosign (3.0.6,
sigstore/cosign-installer v4.1.2) writes, read from its source:

- `cosign sign` stores a Sigstore bundle as an OCI referrer of the digest (a manifest
  pushed by digest, no tag) where the registry answers the referrers API, as ECR does.
  Where it does not, go-containerregistry keeps the referrers in an index under the
  fallback tag `sha256-<hex>` and rewrites it for each new signature: an immutable
  repository refuses the second write. Signatures of cosign 2 (`--new-bundle-format=false`)
  live under `sha256-<hex>.sig`.
- `cosign verify` reads the bundles (referrers API, else the fallback tag) and only without
  any falls back to the `.sig` tag.
- `cosign copy --only=sig,att` copies the `.sig`/`.att` tags only (and is deprecated since
  3.0.5): it carries no bundle over. `cosign download signature` prints each bundle as a
  JSON line, and `cosign attach signature --bundle FILE` writes one as a referrer.

The steps' scripts run here as the runner runs them (`bash -eo pipefail`), with the real `jq` and
stand-ins for cosign and crane that model those behaviours over a registry kept in JSON
(keyless signing, Fulcio and Rekor cannot be reached from here). The stand-in's signature
is the certificate claims main.yml checks, and it "verifies" when they all match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .test_tools import PROD_IMAGE, commands, release_step, workflows
from .workflow_steps import DEV_IMAGE, SHA, run_with_registry, step_of

pytestmark = pytest.mark.k8s

DIGEST = "sha256:" + "ab" * 32
OTHER_SHA = "beef" * 10
SIGNER = "https://github.com/acme/comments-api/.github/workflows/dev.yml@refs/heads/dev"
ISSUER = "https://token.actions.githubusercontent.com"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
FALLBACK_TAG = "sha256-" + "ab" * 32
SIG_TAG = FALLBACK_TAG + ".sig"

# The stand-in cosign and crane (one program: `tool` says which), over $REGISTRY:
#   storage: "referrers" (the registry answers the referrers API: ECR) or "tag" (it does
#     not: bundles go to the fallback tag sha256-<hex>)
#   token: the claims cosign sign's keyless certificate would carry
#   repos: {repository: {"tags": {tag: digest or [signatures]}, "referrers": {digest: [...]}}}
# Tags are immutable, as in ECR.
FAKE = r"""
def save():
    with open(os.environ["REGISTRY"], "w") as f:
        json.dump(registry, f)


def parse(ref):
    if "@" in ref:
        repo, digest = ref.split("@")
        return repo.split("/", 1)[1], digest, None
    repo, tag = ref.rsplit(":", 1)
    return repo.split("/", 1)[1], None, tag


def repo_of(name):
    return registry["repos"].setdefault(name, {"tags": {}, "referrers": {}})


def put_tag(repo, name, tag, value):
    if tag in repo["tags"] and repo["tags"][tag] != value:
        sys.exit(f"Error: tag invalid: The image tag '{tag}' already exists in the '{name}'"
                 " repository and cannot be overwritten because the repository is immutable.")
    repo["tags"][tag] = value


def write_bundle(ref, bundle):
    name, digest, _ = parse(ref)
    repo = repo_of(name)
    if digest not in repo["tags"].values():
        sys.exit(f"Error: MANIFEST_UNKNOWN: {ref}")
    if registry["storage"] == "referrers":
        repo["referrers"].setdefault(digest, []).append(bundle)
    else:
        tag = digest.replace(":", "-")
        put_tag(repo, name, tag, repo["tags"].get(tag, []) + [bundle])
    save()


def bundles(repo, digest):
    return repo["referrers"].get(digest, []) + repo["tags"].get(digest.replace(":", "-"), [])


if tool == "crane" and args[0] == "digest":
    name, _, tag = parse(args[1])
    found = repo_of(name)["tags"].get(tag)
    if not isinstance(found, str):
        sys.exit(f"Error: MANIFEST_UNKNOWN: {args[1]}")
    print(found)
elif tool == "crane" and args[0] == "copy":
    src, dst = parse(args[1]), parse(args[2])
    if src[1] not in repo_of(src[0])["tags"].values():
        sys.exit(f"Error: MANIFEST_UNKNOWN: {args[1]}")
    put_tag(repo_of(dst[0]), dst[0], dst[2], src[1])  # no referrers: crane copies the image
    save()
elif tool == "cosign" and args[0] == "verify":
    name, digest, _ = parse(args[1])
    repo = repo_of(name)
    found = bundles(repo, digest) or repo["tags"].get(digest.replace(":", "-") + ".sig", [])
    if not found:
        sys.exit("Error: no signatures found")
    wanted = {
        "subject": digest,
        "identity": opt("--certificate-identity"),
        "issuer": opt("--certificate-oidc-issuer"),
        "sha": opt("--certificate-github-workflow-sha"),
        "trigger": opt("--certificate-github-workflow-trigger"),
    }
    if not any(all(s.get(k) == v for k, v in wanted.items()) for s in found):
        sys.exit("Error: no matching signatures: none of the expected identities matched")
    print(json.dumps(found))
elif tool == "cosign" and args[:2] == ["sign", "--yes"]:
    _, digest, _ = parse(args[2])
    write_bundle(args[2], {"mediaType": BUNDLE, "subject": digest, **registry["token"]})
elif tool == "cosign" and args[:2] == ["download", "signature"]:
    name, digest, _ = parse(args[2])
    repo = repo_of(name)
    found = bundles(repo, digest) or repo["tags"].get(digest.replace(":", "-") + ".sig", [])
    if not found:
        sys.exit(f"Error: no signatures associated with {args[2]}")
    for signature in found:
        print(json.dumps(signature))
elif tool == "cosign" and args[:2] == ["attach", "signature"]:
    bundle = json.load(open(opt("--bundle")))
    if bundle.get("mediaType") != BUNDLE:
        sys.exit("Error: empty signature")  # the legacy path, which wants --signature
    write_bundle(args[-1], bundle)
elif tool == "cosign" and args[0] == "copy":
    # cosign 3.0.6 with --only=sig,att: the .sig/.att tags of the digest, nothing else.
    src, dst = parse(args[-2]), parse(args[-1])
    for suffix in (".sig", ".att"):
        tag = src[1].replace(":", "-") + suffix
        value = repo_of(src[0])["tags"].get(tag)
        if value is None:
            continue
        if repo_of(dst[0])["tags"].get(tag, value) != value:
            sys.exit(f'Error: image "{tag}" already exists. Use `-f` to overwrite')
        repo_of(dst[0])["tags"][tag] = value
    save()
else:
    sys.exit(f"unexpected {tool} call: {' '.join(args)}")
""".replace("BUNDLE", repr(BUNDLE))


def signature(
    sha: str = SHA, subject: str = DIGEST, identity: str = SIGNER, bundle: bool = True
) -> dict[str, str]:
    """What dev.yml's signature of a push to dev certifies (or another one's)."""
    claims = {"subject": subject, "identity": identity, "issuer": ISSUER, "sha": sha}
    return {**({"mediaType": BUNDLE} if bundle else {}), **claims, "trigger": "push"}


def registry(
    storage: str = "referrers",
    dev: list[dict[str, str]] | None = None,
    prod: dict[str, Any] | None = None,
    trigger: str = "push",
) -> dict[str, Any]:
    """The dev repository holds the build of SHA (and the signatures in `dev`), the prod
    repository what `prod` says."""
    repos: dict[str, Any] = {
        "comments-api/dev": {"tags": {SHA: DIGEST}, "referrers": {}},
        "comments-api-prod": prod or {"tags": {}, "referrers": {}},
    }
    for sig in dev or []:
        if "mediaType" not in sig:
            repos["comments-api/dev"]["tags"][SIG_TAG] = [sig]
        elif storage == "referrers":
            repos["comments-api/dev"]["referrers"].setdefault(DIGEST, []).append(sig)
        else:
            repos["comments-api/dev"]["tags"].setdefault(FALLBACK_TAG, []).append(sig)
    token = {"identity": SIGNER, "issuer": ISSUER, "sha": SHA, "trigger": trigger}
    return {"storage": storage, "token": token, "repos": repos}


def run(
    step: dict[str, Any], tmp_path: Path, state: dict[str, Any]
) -> tuple[int, str, list[str], dict[str, Any]]:
    """The step with the stand-ins; its exit code, output, tool calls and the registry
    after it."""
    env = {
        "DEV_IMAGE": DEV_IMAGE,
        "PROD_IMAGE": PROD_IMAGE,
        "DIGEST": DIGEST,
        "SHA": SHA,
        "SIGNER": SIGNER,
    }
    done = run_with_registry(step, tmp_path, env, state, {"cosign": FAKE, "crane": FAKE})
    return done.code, done.out, done.calls, done.registry


def signed(after: dict[str, Any], repository: str) -> list[dict[str, str]]:
    repo = after["repos"][repository]
    return repo["referrers"].get(DIGEST, []) + repo["tags"].get(FALLBACK_TAG, [])


# --- dev.yml: sign -------------------------------------------------------------------------


def sign_step() -> dict[str, Any]:
    return step_of(workflows()["dev.yml"]["jobs"]["sign"], run="cosign sign")


def test_sign_checks_what_main_requires() -> None:
    """The signature that counts as "already there" is the one main.yml accepts: the same
    identity, issuer, commit and trigger."""
    flows = workflows()
    job = flows["dev.yml"]["jobs"]["sign"]
    assert job["env"]["SIGNER"] == flows["main.yml"]["env"]["SIGNER"]
    step = sign_step()
    assert step["env"]["SHA"] == "${{ github.sha }}"
    (verify,) = commands(step["run"], "cosign verify")
    assert '--certificate-identity "$SIGNER"' in verify
    assert f"--certificate-oidc-issuer {ISSUER}" in verify
    assert '--certificate-github-workflow-sha "$SHA"' in verify
    assert "--certificate-github-workflow-trigger push" in verify


@pytest.mark.parametrize("storage", ["referrers", "tag"])
def test_sign_first_run_signs(tmp_path: Path, storage: str) -> None:
    code, out, calls, after = run(sign_step(), tmp_path, registry(storage))
    assert code == 0, out
    assert calls.count(f"cosign sign --yes {DEV_IMAGE}@{DIGEST}") == 1, calls
    assert signed(after, "comments-api/dev") == [signature()]
    # Checked before (nothing yet) and after (main.yml's check passes).
    assert [c.split()[1] for c in calls] == ["verify", "sign", "verify"], calls


@pytest.mark.parametrize("storage", ["referrers", "tag"])
def test_sign_rerun_with_this_workflows_signature_skips(tmp_path: Path, storage: str) -> None:
    """With the fallback tag, signing again is refused by the immutable repository and the
    re-run failed; with referrers it piled up a signature per re-run."""
    state = registry(storage, dev=[signature()])
    code, out, calls, after = run(sign_step(), tmp_path, state)
    assert code == 0, out
    assert not [c for c in calls if c.startswith("cosign sign")], calls
    assert "already carries this workflow's signature" in out
    assert after == state, "nothing written"


@pytest.mark.parametrize(
    "other",
    [signature(sha=OTHER_SHA), signature(identity=SIGNER.replace("dev.yml", "main.yml"))],
    ids=["another commit", "another workflow"],
)
def test_sign_rerun_never_takes_a_signature_that_does_not_verify(
    tmp_path: Path, other: dict[str, str]
) -> None:
    """A signature tag already there that does not pass main.yml's check is not taken
    for this run's: signing is tried, the immutable tag refuses it, and the step fails."""
    state = registry("tag", dev=[other])
    code, out, calls, after = run(sign_step(), tmp_path, state)
    assert code == 1, out
    assert f"cosign sign --yes {DEV_IMAGE}@{DIGEST}" in calls
    assert "::error::cosign could not sign" in out
    assert "already carries" not in out
    assert after == state


def test_sign_beside_a_foreign_referrer_adds_its_own(tmp_path: Path) -> None:
    """As referrers, another signature does not block this one: it is added and checked."""
    state = registry("referrers", dev=[signature(sha=OTHER_SHA)])
    code, out, calls, after = run(sign_step(), tmp_path, state)
    assert code == 0, out
    assert calls.count(f"cosign sign --yes {DEV_IMAGE}@{DIGEST}") == 1, calls
    assert signed(after, "comments-api/dev") == [signature(sha=OTHER_SHA), signature()]


def test_sign_fails_when_its_signature_would_not_pass_main(tmp_path: Path) -> None:
    """The signature made must be the one main.yml accepts (here the certificate names
    another trigger): the step says so instead of passing."""
    code, out, calls, after = run(sign_step(), tmp_path, registry(trigger="workflow_dispatch"))
    assert code == 1, out
    assert calls[-1].startswith("cosign verify"), "checked after signing"
    assert "does not pass main.yml's check" in out
    assert len(signed(after, "comments-api/dev")) == 1


# --- main.yml: the copy to the prod repository ------------------------------------------


def copy_step() -> dict[str, Any]:
    return release_step("crane copy")


def prod(
    tag: str | None = DIGEST, signatures: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The prod repository after an earlier run: the commit's tag, and its signatures."""
    repo: dict[str, Any] = {"tags": {SHA: tag} if tag else {}, "referrers": {}}
    if signatures:
        repo["referrers"][DIGEST] = signatures
    return repo


def test_copy_first_run_copies_the_image_and_its_bundle(tmp_path: Path) -> None:
    """crane copies no referrer and `cosign copy` no bundle: the signature reaches the
    prod repository through download and attach, and is checked there."""
    code, out, calls, after = run(copy_step(), tmp_path, registry(dev=[signature()]))
    assert code == 0, out
    assert f"crane copy {DEV_IMAGE}@{DIGEST} {PROD_IMAGE}:{SHA}" in calls
    assert after["repos"]["comments-api-prod"]["tags"] == {SHA: DIGEST}
    assert signed(after, "comments-api-prod") == [signature()]
    assert calls[-1].startswith(f"cosign verify {PROD_IMAGE}@{DIGEST}"), calls


def test_copy_rerun_after_a_complete_copy_writes_nothing(tmp_path: Path) -> None:
    state = registry(dev=[signature()], prod=prod(signatures=[signature()]))
    code, out, calls, after = run(copy_step(), tmp_path, state)
    assert code == 0, out
    assert "already promoted" in out
    assert "its signature is in the prod repository already" in out
    assert not [c for c in calls if c.split()[1] in ("copy", "download", "attach")], calls
    assert after == state


@pytest.mark.parametrize("storage", ["referrers", "tag"])
def test_copy_rerun_after_the_image_but_before_the_signature(tmp_path: Path, storage: str) -> None:
    """The first run stopped between the crane copy and the signature (timeout, a
    registry error): the re-run keeps the tag, which names the digest, and copies the
    signature."""
    state = registry(storage, dev=[signature()], prod=prod())
    code, out, calls, after = run(copy_step(), tmp_path, state)
    assert code == 0, out
    assert not [c for c in calls if c.startswith("crane copy")], calls
    assert signed(after, "comments-api-prod") == [signature()]


def test_copy_rerun_with_a_signature_tag_that_does_not_verify_fails(tmp_path: Path) -> None:
    """Without the referrers API the prod bundles live under the fallback tag: one that
    holds a signature that does not pass (another commit's) is never taken, and the
    immutable tag refuses the real one, so the step fails."""
    stale = {"tags": {SHA: DIGEST, FALLBACK_TAG: [signature(sha=OTHER_SHA)]}, "referrers": {}}
    state = registry("tag", dev=[signature()], prod=stale)
    code, out, calls, after = run(copy_step(), tmp_path, state)
    assert code != 0, out
    assert calls[-1].startswith("cosign attach signature --bundle"), calls
    assert "already exists" in out
    assert after == state


def test_copy_rerun_beside_a_foreign_referrer_adds_the_real_one(tmp_path: Path) -> None:
    state = registry(dev=[signature()], prod=prod(signatures=[signature(sha=OTHER_SHA)]))
    code, out, calls, after = run(copy_step(), tmp_path, state)
    assert code == 0, out
    assert len([c for c in calls if c.startswith("cosign attach")]) == 1, calls
    assert signed(after, "comments-api-prod") == [signature(sha=OTHER_SHA), signature()]


@pytest.mark.parametrize(
    ("dev", "said"),
    [
        ([signature(sha=OTHER_SHA)], "no matching signatures"),
        ([signature(subject="sha256:" + "cd" * 32)], "no matching signatures"),
        ([signature(bundle=False)], "has no Sigstore bundle to copy"),
    ],
    ids=["another commit's", "another digest's", "cosign 2 signature only"],
)
def test_copy_never_promotes_without_this_commits_signature(
    tmp_path: Path, dev: list[dict[str, str]], said: str
) -> None:
    code, out, _, _ = run(copy_step(), tmp_path, registry(dev=dev))
    assert code != 0, out
    assert said in out


def test_copy_rerun_with_the_tag_on_another_digest_fails(tmp_path: Path) -> None:
    state = registry(dev=[signature()], prod=prod(tag="sha256:" + "cd" * 32))
    code, out, calls, after = run(copy_step(), tmp_path, state)
    assert code == 1
    assert "digest changed" in out
    assert not [c for c in calls if c.startswith("cosign")], calls
    assert after == state
