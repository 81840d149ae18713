"""`scripts/deploy.sh --target local`, executed for real: registries, skopeo, haproxy,
PostgreSQL, Redis and 3 hardened replicas per environment, all on 127.0.0.1.

The tests share one stack and run in order: a good release; a broken build stopped in
staging; then one release that fails only in production, deployed and rolled back while k6
keeps loading production, after which a replica is killed. That last run serves two tests:
zero failed requests through two full rolling updates (forward and back) and a replica loss,
and the automatic rollback. (One full pipeline run fewer: the shared 2-core machine makes
each one take minutes.) Then a release whose production replicas never become ready is
rolled back too, which brings production back to 3 replicas of the good release.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from ..support import missing
from .conftest import QUICK_LOAD, ROOT, Run, Stack, sh

# Each test runs the whole pipeline at least once; on a busy 2-core machine that took up
# to 200 s (the module's first test also pays for the image build). They share the
# module's stack (its state directory, ports and replicas) and fixed image tags
# (comments-api:again, :v2, :namesake...): scripts/pipeline-test.sh runs a module's tests
# on one xdist worker, in order (--dist loadfile).
pytestmark = [pytest.mark.pipeline, pytest.mark.timeout(900)]

K6 = ROOT / ".venv" / "bin" / "k6"
STAGES = [
    "tests",
    "lint and security scans",
    "build the image once",
    "push to the dev registry",
    "deploy to staging by digest",
    "wait for readiness: staging",
    "E2E on staging",
    "load test on staging",
    "promote",
    "verify the signature",
    "deploy to production by digest",
    "wait for readiness: production",
    "smoke test production",
]


def haproxy_states(stack: Stack, env: str) -> dict[str, int]:
    """haproxy's own view (runtime API): server name -> operational state (2 = UP)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(stack.state / env / "haproxy.sock"))
        sock.sendall(b"show servers state app\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split() for line in data.decode().splitlines()[2:] if line.strip()]
    return {row[3]: int(row[5]) for row in rows}


def digest_of(ref: str) -> str:
    return ref.split("@", 1)[1]


def assert_serving(stack: Stack, env: str, digest: str, replicas: int = 3) -> None:
    running = stack.replicas(env)
    assert len(running) == replicas, running
    for replica in running:
        assert digest_of(replica["ref"]) == digest, replica
        assert digest in replica["repo_digests"], replica
    ready = requests.get(f"{stack.lb(env)}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text


def production_refusing_image(stack: Stack, name: str) -> str:
    """A release that passes staging but whose replicas exit at once where their database
    secret names the production database: a production rollout that never becomes ready.
    (Migrations still run: deploy.sh gives their container its own entrypoint.)"""
    wrapper = (
        "import os, sys\n"
        "if 'comments_production' in open('/run/secrets/database-url').read():\n"
        "    sys.exit('this release refuses production')\n"
        "os.execv('/venv/bin/comments-api', ['comments-api', *sys.argv[1:]])\n"
    )
    return stack.derived_image(
        name,
        f"FROM {stack.base_image}\n"
        f"ENTRYPOINT {json.dumps(['/venv/bin/python', '-c', wrapper])}\n"
        'CMD ["serve"]\n',
    )


def test_a_good_change_goes_dev_staging_production_with_one_digest(stack: Stack):
    run = stack.first
    assert run.rc == 0, run.out[-3000:]
    positions = [run.out.find(f"] {name}") for name in STAGES]
    assert -1 not in positions, dict(zip(STAGES, positions, strict=True))
    assert positions == sorted(positions), "stages out of order"
    assert run.out.count("docker build") <= 1

    release = stack.release()
    digest = release["digest"]
    assert digest.startswith("sha256:")
    assert len(digest) == 71
    # The same manifest in both registries: promoted by copy, not rebuilt.
    assert stack.registry_digest("dev", release["tag"]) == digest
    assert stack.registry_digest("prod", release["tag"]) == digest
    assert "Signature verified, digest " + digest in run.out
    # Every replica runs that digest, pulled from its environment's registry, and its image
    # is the very build of this run (same config digest).
    for env, registry in (("staging", "dev"), ("production", "prod")):
        assert_serving(stack, env, digest)
        for replica in stack.replicas(env):
            assert replica["ref"] == f"{stack.registry(registry)}/comments-api@{digest}"
            assert replica["image_id"] == release["image_id"]
        assert set(haproxy_states(stack, env).values()) >= {2}
    assert sum(state == 2 for state in haproxy_states(stack, "production").values()) == 3


def test_rate_limits_are_shared_through_redis_behind_its_password(stack: Stack):
    port = int(stack.env["REDIS_PORT"])
    # Without the password Redis refuses every command.
    with (
        redis.Redis(host="127.0.0.1", port=port) as stranger,
        pytest.raises(redis.AuthenticationError),
    ):
        stranger.ping()
    password = (stack.state / "redis-password").read_text().strip()
    assert len(password) >= 32
    for env, db in (("staging", 0), ("production", 1)):
        with redis.Redis(host="127.0.0.1", port=port, db=db, password=password) as client:
            client.flushdb()
            # A read counts against a per-minute budget: the replica that served it wrote
            # its counter to its environment's database. (A replica that cannot reach Redis
            # falls back to in-memory limits and still answers 200: only this proves the
            # wiring.)
            for _ in range(3):
                assert requests.get(f"{stack.lb(env)}/api/v1/counts?content_id=1", timeout=5).ok
            keys = [key.decode() for key in client.keys("*")]
        assert any("LIMITER" in key for key in keys), (env, keys)


def test_a_digest_promoted_again_under_another_tag_is_verified(stack: Stack):
    # The release production runs, released again under a new tag (same image, so the same
    # digest). skopeo added signature-2 to the lookaside store, but signature-1 (whose
    # identity is the first tag) was verified: "Docker reference ... does not match", and
    # the promotion failed.
    good = stack.serving("production")
    run = stack.release_image(stack.base_image, "again")
    assert stack.release()["digest"] == good, "the same image must give the same digest"
    assert run.rc == 0, run.out[-3000:]
    assert "Signature verified, digest " + good in run.out
    assert_serving(stack, "production", good)


def test_a_rerun_that_fails_in_production_is_not_called_rolled_back(stack: Stack):
    # The release production already runs, deployed again (same image: same digest), and a
    # production check fails. There is nothing to roll back to: that is exit 3, not 2
    # ("rolled back automatically" to the very digest that fails).
    good = stack.serving("production")
    run = stack.release_image(stack.base_image, "again2", "--prod-smoke-hook", "false")
    assert stack.release()["digest"] == good, "the same image must give the same digest"
    assert run.rc == 3, run.out[-3000:]
    assert "production smoke hook failed: exit 1 after" in run.out
    assert f"production ran {good} before this run" in run.out
    assert "ROLLBACK production" not in run.out
    assert_serving(stack, "production", good)
    assert stack.serving("production") == good


def test_a_release_failing_e2e_is_rolled_back_and_not_left_as_the_rollback_target(stack: Stack):
    good = stack.serving("production")
    assert stack.serving("staging") == good
    # Ready, but it breaks the API: the walkthrough's 11-character comment is refused.
    bad = stack.derived_image("e2efail", f"FROM {stack.base_image}\nENV MAX_COMMENT_LENGTH=5\n")
    run = stack.release_image(bad, "e2efail")
    assert run.rc == 1, run.out[-3000:]
    assert "E2E or load test failed in staging" in run.out
    assert "ROLLBACK staging to the previous digest " + good in run.out
    # Readiness alone said the replicas answer /readyz: the release staging went back to is
    # smoke-tested too, as production's is after its rollback.
    recheck = run.out.index("re-check staging after the rollback: smoke test of " + good)
    assert recheck > run.out.index("ROLLBACK staging")
    assert "pipeline_e2e.py smoke " + stack.lb("staging") in run.out[recheck:]
    assert f"staging is back on {good} and it answers its smoke test" in run.out
    assert "PIPELINE FAILED before production (production untouched)" in run.out
    assert stack.registry_digest("prod", "e2efail") is None
    assert_serving(stack, "staging", good)
    # What deploy.sh records as staging's release (the next run's rollback target) is what
    # runs there, not the rejected one: a later failure would "roll back" to it.
    assert stack.serving("staging") == good


def test_a_broken_build_is_stopped_in_staging_and_never_reaches_production(stack: Stack):
    good = stack.serving("production")
    assert stack.serving("staging") == good
    # A release whose server never comes up (a boot that hangs): readiness never passes.
    broken = stack.derived_image(
        "broken",
        f"FROM {stack.base_image}\n"
        'ENTRYPOINT ["/venv/bin/python", "-c", "import time; time.sleep(600)"]\n',
    )
    tag = "broken"
    run = stack.release_image(
        broken, tag, "--ready-timeout", "8", quick=False, label="broken_build_stopped_in_staging"
    )
    assert run.rc == 1, run.out[-3000:]
    assert "stopped in staging" in run.out
    assert "never became ready" in run.out
    assert "ROLLBACK staging to the previous digest " + good in run.out
    # The rollback after a failed rollout is smoke-tested too, as after a failed E2E: it
    # was readiness only, yet the run went on to say staging was rolled back.
    recheck = run.out.index("re-check staging after the rollback: smoke test of " + good)
    assert recheck > run.out.index("ROLLBACK staging")
    assert "pipeline_e2e.py smoke " + stack.lb("staging") in run.out[recheck:]
    assert f"staging is back on {good} and it answers its smoke test" in run.out
    assert "staging is down" not in run.out
    broken_digest = stack.registry_digest("dev", tag)
    assert broken_digest
    assert broken_digest != good
    # Never promoted: the prod registry has neither the tag nor the manifest.
    assert stack.registry_digest("prod", tag) is None
    assert stack.registry_digest("prod", broken_digest) is None
    # Staging is back on the good release, production never changed.
    assert_serving(stack, "staging", good)
    assert stack.serving("staging") == good
    assert stack.serving("production") == good
    for replica in stack.replicas("production"):
        assert digest_of(replica["ref"]) == good
    assert not [c for c in stack.replicas("staging") if broken_digest in c["ref"]]


def test_a_digest_that_cannot_be_read_stops_the_release_at_the_push(stack: Stack, tmp_path):
    # skopeo cannot read the dev registry (here: its credentials file is not JSON; the same
    # as an unreachable registry or missing credentials) right after `docker push`. The
    # failure was lost inside `$(...)`: the run went on with an empty digest and "deployed"
    # `comments-api@` to staging.
    good = stack.serving("staging")
    auth = tmp_path / "auth.json"
    auth.write_text("not json\n")
    run = stack.release_image(
        stack.base_image, "noinspect", quick=False, env={"REGISTRY_AUTH_FILE": str(auth)}
    )
    assert run.rc == 1, run.out[-3000:]
    assert "no manifest digest for" in run.out
    assert "] deploy to staging" not in run.out, run.out[-3000:]
    assert stack.release()["tag"] != "noinspect"
    assert stack.serving("staging") == good
    assert_serving(stack, "staging", good)


@dataclass
class LoadedRelease:
    good: str
    run: Run
    production_after_rollback: list[dict[str, str]]
    killed_marked_down: bool
    k6_returncode: int
    k6_stderr: str
    metrics: dict


@pytest.fixture(scope="module")
def production_failure_under_load(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> LoadedRelease:
    """A release that fails only in production, then the loss of a replica, under k6 load."""
    tmp = tmp_path_factory.mktemp("prodfail")
    good = stack.serving("production")
    v2 = stack.derived_image("v2", f"FROM {stack.base_image}\nLABEL org.example.change=v2\n")
    # A production-only check (think: a canary journey against real data) that accepts only
    # the release production already runs.
    allow = tmp / "known-good"
    allow.write_text(good + "\n")
    summary = tmp / "k6-summary.json"
    # Steady load on production for the whole run; stopped (SIGINT) once done.
    k6 = subprocess.Popen(
        [
            str(K6),
            "run",
            "--no-usage-report",
            "--quiet",
            "-e",
            f"BASE_URL={stack.lb('production')}",
            "-e",
            "VUS=2",
            "-e",
            "DURATION=600s",
            "-e",
            "PAUSE_S=0.1",
            "-e",
            "MAX_FAILED_RATE=0",
            "-e",
            "P95_MS=5000",
            "--summary-export",
            str(summary),
            str(ROOT / "scripts" / "k6" / "pipeline-load.js"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    down = False
    run = Run(-1, "", 0.0)
    after_rollback: list[dict[str, str]] = []
    try:
        time.sleep(3)
        run = stack.release_image(
            v2,
            "v2",
            "--prod-smoke-hook",
            f'grep -qx "$DEPLOY_DIGEST" {allow}',
            label="production_failure_rollback_under_load",
        )
        after_rollback = stack.replicas("production")
        if run.rc == 2 and after_rollback:
            # Lose one replica abruptly (SIGKILL: no drain at all).
            victim = after_rollback[0]
            sh("docker", "kill", victim["id"])
            port = victim["name"].rsplit("-", 1)[1]
            slots = [
                key.rsplit("_", 1)[1]
                for key, value in stack.env.items()
                if key.startswith("production_PORT_") and value == port
            ]
            assert slots, (port, stack.env)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not down:
                states = haproxy_states(stack, "production")
                down = all(states.get(f"r{slot}") == 0 for slot in slots)
                time.sleep(0.2)
            time.sleep(3)  # keep the load on two replicas for a while
    finally:
        k6.send_signal(signal.SIGINT)
        try:
            _, err = k6.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            k6.kill()
            _, err = k6.communicate()
    metrics = json.loads(summary.read_text())["metrics"] if summary.exists() else {}
    return LoadedRelease(good, run, after_rollback, down, k6.returncode, err, metrics)


def test_rolling_updates_and_losing_a_replica_under_load_fail_no_request(
    stack: Stack, production_failure_under_load: LoadedRelease
):
    result = production_failure_under_load
    out = result.run.out
    # Production was rolled forward (every replica replaced) and back, under the load.
    assert out.count("production replica 3: ready on its own port") == 2, out[-3000:]
    assert out.count("stop the old") >= 9  # 3 in staging, 3 forward, 3 back
    assert result.killed_marked_down, "haproxy never marked the killed replica DOWN"
    assert result.k6_returncode in (0, 105), result.k6_stderr[-2000:]  # 105: SIGINT
    metrics = result.metrics
    stack.figures["load_requests_during_rollouts_and_kill"] = metrics["http_reqs"]["count"]
    # Rate metric in the export: "passes" counts failed requests, "fails" the good ones.
    assert metrics["http_req_failed"]["passes"] == 0, metrics["http_req_failed"]
    assert metrics["checks"]["fails"] == 0, metrics["checks"]
    assert metrics["http_reqs"]["count"] > 100, metrics["http_reqs"]


def assert_production_answers_its_smoke_test(stack: Stack) -> None:
    """The smoke test deploy.sh runs, run again by the test against production's LB."""
    smoke = subprocess.run(
        ["python3", str(ROOT / "scripts" / "pipeline_e2e.py"), "smoke", stack.lb("production")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert smoke.returncode == 0, smoke.stdout


def test_a_release_failing_only_in_production_is_rolled_back(
    stack: Stack, production_failure_under_load: LoadedRelease
):
    result = production_failure_under_load
    good, run = result.good, result.run
    assert run.rc == 2, run.out[-3000:]
    v2_digest = stack.registry_digest("prod", "v2")
    assert v2_digest
    assert v2_digest != good
    target = f"{stack.registry('prod')}/comments-api@{v2_digest}"
    assert f"deploy to production by digest: {target}" in run.out  # it did reach production...
    assert "production smoke test failed" in run.out
    assert "ROLLBACK production to the previous digest " + good in run.out
    # Exit 2 only once the release it went back to answers its smoke test.
    recheck = run.out.index("re-check production after the rollback: smoke test of " + good)
    assert recheck > run.out.index("ROLLBACK production")
    assert f"production is back on {good} and it answers its smoke test" in run.out
    # ...and right after the rollback all 3 production replicas ran the old digest.
    assert len(result.production_after_rollback) == 3
    for replica in result.production_after_rollback:
        assert digest_of(replica["ref"]) == good, replica
    assert stack.serving("production") == good
    # Still serving (two replicas since the kill), on the old digest.
    for replica in stack.replicas("production"):
        assert digest_of(replica["ref"]) == good
    assert_production_answers_its_smoke_test(stack)
    # Staging passed its gates and keeps the new release.
    assert_serving(stack, "staging", v2_digest)


def test_a_production_rollout_that_never_becomes_ready_is_rolled_back_and_exits_2(stack: Stack):
    # A release that passes staging, but whose first production replica exits at once: the
    # rollout stops there, production goes back to the release it ran (re-started where a
    # replica of it was lost, as after the kill above) and that release is smoke-tested.
    good = stack.serving("production")
    image = production_refusing_image(stack, "prodrefuse")
    tag = "prodrefuse"
    try:
        run = stack.release_image(image, tag, label="production_rollout_rolled_back")
        new = stack.registry_digest("prod", tag)
        assert new, run.out[-3000:]
        assert new != good
        out = run.out
        assert run.rc == 2, out[-3000:]
        assert f"deploy to production by digest: {stack.registry('prod')}/comments-api@{new}" in out
        # (stdout, then stderr: order is compared within one stream only)
        failed = out.index(f"production replica 1 never became ready with {new}")
        assert "this release refuses production" in out[failed:]  # its log, shown
        # The rollout stopped at the first replica: the new release ran nowhere else.
        assert f"production replica 1: start {new}" in out
        assert f"production replica 2: start {new}" not in out
        rollback = out.index("ROLLBACK production to the previous digest " + good)
        recheck = out.index("re-check production after the rollback: smoke test of " + good)
        assert recheck > rollback
        assert "pipeline_e2e.py smoke " + stack.lb("production") in out[recheck:]
        assert f"production is back on {good} and it answers its smoke test" in out
        assert f"production rollout failed; rolled back to {good}" in out
        assert "PIPELINE FAILED in production: rolled back automatically" in out
        # Every production replica runs the previous release again, all 3 UP in haproxy
        # (the new one's slot is not), recorded as what production serves.
        assert_serving(stack, "production", good)
        assert sum(state == 2 for state in haproxy_states(stack, "production").values()) == 3
        assert stack.serving("production") == good
        assert_production_answers_its_smoke_test(stack)
        # Staging passed its gates and keeps the new release.
        assert_serving(stack, "staging", new)
        assert stack.serving("staging") == new
    finally:
        # deploy.sh's tag and the derived image's (their replicas run it by digest).
        sh("docker", "rmi", f"comments-api:{tag}", image, check=False)


def processes_naming(path: Path) -> list[str]:
    """The command lines of the processes that name ``path`` in theirs."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not a process
            continue
        if proc.name.isdigit() and str(path) in command:
            found.append(f"{proc.name} {command}")
    return found


def test_a_failed_production_rollout_that_cannot_roll_back_exits_3(stack: Stack):
    """A fresh stack whose first release passes staging but never becomes ready in
    production: there is no previous release, so production serves nothing. That is exit 3
    ("the rollback failed too: act now"), as after a failed smoke test; it was exit 2,
    "rolled back automatically", because the rollout's rollback result was ignored."""
    image = production_refusing_image(stack, "prodfail")
    state = Path(tempfile.mkdtemp(prefix="cpl3-"))
    try:
        proc = subprocess.run(
            [
                str(ROOT / "scripts" / "deploy.sh"),
                "--target",
                "local",
                "--state-dir",
                str(state),
                "--skip-tests",
                "--skip-scans",
                "--image",
                image,
                "--tag",
                "prodfail",
                *QUICK_LOAD,
            ],
            capture_output=True,
            text=True,
            timeout=800,
            cwd=ROOT,
        )
        out = proc.stdout + proc.stderr
        print(out)
        assert "production replica 1 never became ready" in out, out[-3000:]
        assert "no previous release to roll back to" in out
        assert proc.returncode == 3, out[-3000:]
        assert "PIPELINE FAILED in production and the rollback failed too" in out
        # A failed run tears its stack down too: its registries, Redis and haproxys ran on
        # (their state directory removed, so no --down could find them).
        assert processes_naming(state) == [], out[-3000:]
    finally:
        if state.exists():
            subprocess.run(
                [str(ROOT / "scripts" / "deploy.sh"), "--down", "--state-dir", str(state)],
                capture_output=True,
                timeout=180,
                check=False,
            )
        shutil.rmtree(state, ignore_errors=True)
        sh("docker", "rmi", "comments-api:prodfail", check=False)  # deploy.sh's tag of the image


def test_tearing_down_a_stack_leaves_a_namesake_alone(stack: Stack, tmp_path):
    """Two kept stacks whose state directories share a base name (.../a/state and
    .../b/state): both were labelled "state", so --down of one removed the other's
    containers. Each is brought up for real and stopped at the push (skopeo cannot read
    the registry), then a container carrying b's label stands in for b's replicas."""
    auth = tmp_path / "auth.json"
    auth.write_text("not json\n")
    states = [Path(tempfile.mkdtemp(prefix="cpl-ns-")) / name / "state" for name in "ab"]
    container = ""
    try:
        for state in states:
            state.mkdir(parents=True)
            proc = subprocess.run(
                [
                    str(ROOT / "scripts" / "deploy.sh"),
                    "--target",
                    "local",
                    "--keep",
                    "--skip-tests",
                    "--skip-scans",
                    "--image",
                    stack.base_image,
                    "--tag",
                    "namesake",
                    "--state-dir",
                    str(state),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=ROOT,
                env={**os.environ, "REGISTRY_AUTH_FILE": str(auth)},
            )
            assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr
            assert (state / "stack.env").exists(), proc.stdout[-2000:]
            # Stopped at the push, by skopeo: the registries ignore REGISTRY_* variables
            # (docker-registry read REGISTRY_AUTH_FILE as config and did not start).
            output = proc.stdout + proc.stderr
            assert "no manifest digest for" in output, output[-2000:]
            assert "waiting for the dev registry" not in output, output[-2000:]
        stacks = [
            dict(line.split("=", 1) for line in (s / "stack.env").read_text().splitlines())["STACK"]
            for s in states
        ]
        container = sh(
            "docker",
            "create",
            "--network",
            "none",
            "--label",
            f"org.example.pipeline.stack={stacks[1]}",
            stack.base_image,
        ).stdout.strip()
        down = subprocess.run(
            [str(ROOT / "scripts" / "deploy.sh"), "--down", "--state-dir", str(states[0])],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert down.returncode == 0, down.stderr
        assert not states[0].exists()
        assert sh("docker", "inspect", container, check=False).returncode == 0, (
            f"--down of {states[0]} removed the container of {states[1]} ({stacks})"
        )
    finally:
        if container:
            sh("docker", "rm", "--force", container, check=False)
        for state in states:
            if state.exists():
                subprocess.run(
                    [str(ROOT / "scripts" / "deploy.sh"), "--down", "--state-dir", str(state)],
                    capture_output=True,
                    timeout=180,
                    check=False,
                )
            shutil.rmtree(state.parent.parent, ignore_errors=True)
        sh("docker", "rmi", "comments-api:namesake", check=False)


@dataclass
class LeftBehind:
    good: str
    run: Run
    secret: str
    victim: str
    victim_id: str
    victim_state: str
    production_up: int
    production: list[dict[str, str]]


@pytest.fixture(scope="module")
def old_replica_left_behind(stack: Stack) -> LeftBehind:
    """A new release whose rollout cannot remove one old production replica: its container
    directory is made immutable, so `docker rm` fails for real (as on a filesystem or
    daemon fault) and the container stays. The run also carries a production smoke hook
    whose command holds a token, and passes its options in the `--opt=value` form. The
    container is left for the next test's run (only its directory is made mutable again)."""
    if shutil.which("chattr") is None or os.geteuid() != 0:
        missing("root and chattr, to make a container's directory immutable")
    good = stack.serving("production")
    victim = stack.replicas("production")[0]
    root = sh("docker", "info", "--format", "{{.DockerRootDir}}").stdout.strip()
    full_id = sh("docker", "inspect", "--format", "{{.Id}}", victim["id"]).stdout.strip()
    directory = Path(root) / "containers" / full_id
    if sh("chattr", "+i", str(directory), check=False).returncode != 0:
        missing(f"chattr +i on {directory}")
    v3 = stack.derived_image("v3", f"FROM {stack.base_image}\nLABEL org.example.change=v3\n")
    secret = "tok-" + uuid.uuid4().hex
    hook = f'curl -fsS -o /dev/null -H "X-Smoke-Token: {secret}" "$BASE_URL/readyz"'
    try:
        run = stack.deploy(
            "--skip-tests",
            "--skip-scans",
            f"--image={v3}",
            "--tag=v3",
            "--load-vus=2",
            "--load-duration=3s",
            f"--prod-smoke-hook={hook}",
            label="old_replica_left_behind",
        )
        production_up = sum(s == 2 for s in haproxy_states(stack, "production").values())
        production = [r for r in stack.replicas("production") if r["name"] != victim["name"]]
    finally:
        sh("chattr", "-i", str(directory), check=False)
    state = sh(
        "docker",
        "container",
        "inspect",
        "--format",
        "{{.State.Status}}",
        full_id,
        check=False,
    )
    victim_state = state.stdout.strip() if state.returncode == 0 else "gone"
    return LeftBehind(
        good, run, secret, victim["name"], full_id, victim_state, production_up, production
    )


def test_an_old_replica_that_cannot_be_retired_is_named_and_the_run_exits_4(
    stack: Stack, old_replica_left_behind: LeftBehind
):
    # `wait "${RETIRING[@]}" || true` hid the failure: the run said PIPELINE OK (exit 0)
    # with an old replica still on the host, whose name then blocked its slot's next rollout.
    result = old_replica_left_behind
    run, name = result.run, result.victim
    assert run.rc == 4, run.out[-3000:]
    assert f"the old replica {name} ({result.good}) could not be retired" in run.out
    assert f"docker rm --force {name}" in run.out
    assert "PIPELINE RELEASED v3" in run.out
    assert re.search(rf"!!!   {name} \(production replica \d, {result.good}\): \w+", run.out)
    assert result.victim_state not in ("gone", "unknown"), "the container was there"
    # Released all the same: production runs the new digest on 3 replicas, all UP.
    v3 = stack.registry_digest("prod", "v3")
    assert v3
    assert v3 != result.good
    assert stack.serving("production") == v3
    assert result.production_up == 3
    assert len(result.production) == 3
    assert all(digest_of(replica["ref"]) == v3 for replica in result.production)


def test_the_smoke_hook_runs_without_its_command_in_the_log(
    stack: Stack, old_replica_left_behind: LeftBehind
):
    run = old_replica_left_behind.run
    assert old_replica_left_behind.secret not in run.out
    assert "not shown, it may hold credentials" in run.out
    assert re.search(r"production smoke hook passed: exit 0 after \d+s", run.out), run.out[-3000:]


def test_the_next_rollout_into_its_slot_removes_the_old_replica_first(
    stack: Stack, old_replica_left_behind: LeftBehind
):
    # The leftover's name is its slot's: `docker run --name` into that slot failed with
    # "Conflict", so every later rollout (a rollback included) stopped at that replica.
    result = old_replica_left_behind
    name, good = result.victim, result.good
    try:
        run = stack.release_image(stack.base_image, "back")
        assert run.rc == 0, run.out[-3000:]
        assert f"still holds {name}, an old replica not retired earlier" in run.out
        assert "Conflict" not in run.out
        # Gone; the name is the slot's, now the new replica's.
        assert sh("docker", "container", "inspect", result.victim_id, check=False).returncode
        assert_serving(stack, "production", good)
    finally:
        sh("docker", "rm", "--force", result.victim_id, check=False)
