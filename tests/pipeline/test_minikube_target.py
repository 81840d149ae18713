"""`deploy.sh --target minikube` on its failure paths, for real up to the cluster.

No Kubernetes control plane can run here, so `kubectl` is the one stand-in: a script that
answers the readiness probe, refuses `kubectl apply` (as an API server refusing the
manifests, or an expired credential, would) and logs every call. Docker, the dev registry
(`docker-registry` on 127.0.0.1), skopeo and the image are real.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from ..support import ServiceProcess, missing
from .conftest import DEPLOY, PREBUILT, ROOT, sh

pytestmark = pytest.mark.pipeline

# deploy.sh's READY_TIMEOUT in these runs: the seconds a port-forward that never answers is
# waited for.
PORT_FORWARD_WAIT = 8

KUBECTL = """#!/bin/sh
printf '%s\\n' "$*" >>"{log}"
case " $* " in
  *" get --raw /readyz "*) echo ok ;;
  *" apply "*) echo 'error: You must be logged in to the server (Unauthorized)' >&2; exit 1 ;;
esac
exit 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failure_before_kubectl_apply_rolls_nothing_back(tmp_path: Path, dev_registry: str):
    # kubectl apply refused: staging never changed. `kubectl rollout undo` then took staging
    # back to the release BEFORE the one it was serving.
    if shutil.which("docker") is None:
        missing("docker")  # the registry's tools: dev_registry
    if sh("docker", "info", check=False).returncode != 0:
        missing("a running Docker engine")
    image = PREBUILT or "comments-api:dev"
    if sh("docker", "image", "inspect", image, check=False).returncode != 0:
        missing(f"a built image {image} (PIPELINE_IMAGE)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.log"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(KUBECTL.format(log=log))
    kubectl.chmod(0o755)
    tag = f"mk-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run(
            [
                str(DEPLOY),
                "--target",
                "minikube",
                "--skip-tests",
                "--skip-scans",
                "--image",
                image,
                "--tag",
                tag,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={
                **os.environ,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "DEV_REGISTRY": dev_registry,
            },
        )
        out = proc.stdout + proc.stderr
        print(out)
        calls = log.read_text()
        assert " apply -k " in calls, calls  # it did get as far as the cluster
        assert proc.returncode == 1, out[-3000:]
        assert "rollout undo" not in calls, calls
        assert "ROLLBACK staging" not in out
        assert "staging was not changed by this run (it serves nothing): no rollback" in out
    finally:
        for ref in (f"comments-api:{tag}", f"{dev_registry}/comments-api:{tag}"):
            sh("docker", "rmi", ref, check=False)


# --- against stand-ins for the cluster and the registry -------------------------------------
# docker, skopeo, gpg and curl only log (as in tests/deploy/test_tools.py, minikube_run):
# these tests are about what deploy.sh does with the cluster's answers. kubectl's JSONPath
# output is the real kubectl's, evaluated offline on the objects a cluster would return.
CLUSTER = r"""#!/usr/bin/env python3
import json, os, pathlib, sys
args = sys.argv[1:]
state = pathlib.Path(os.environ["FAKE_STATE"])
fail = os.environ.get("FAKE_FAIL", "")
calls = state / "calls.log"
with open(calls, "a") as log:
    log.write("kubectl " + " ".join(args) + "\n")
real = os.environ["REAL_KUBECTL"]


def arg(name):
    return args[args.index(name) + 1] if name in args else ""


def jsonpath(obj):
    path = state / "object.json"
    path.write_text(json.dumps(obj))
    expr = arg("-o")
    os.execv(real, ["kubectl", "label", "--local", "-f", str(path), "x=y", "-o", expr])


lock = state / "lock"
image = state / f"{arg('--namespace')}.image"
if args[0] == "kustomize":
    os.execv(real, ["kubectl", *args])
if "--raw" in args or ("get" in args and "secret" in args):
    sys.exit(0)
if "configmap" in args:
    if "create" in args and lock.exists():
        sys.exit('error: configmaps "comments-api-deploy-lock" already exists (AlreadyExists)')
    if "create" in args:
        holder = [a for a in args if a.startswith("--from-literal=holder=")][0]
        lock.write_text(holder.split("=", 2)[2])
    elif "delete" in args:
        lock.unlink()
    elif lock.exists():
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lock"}}
        jsonpath({**cm, "data": {"holder": lock.read_text()}})
    else:
        sys.exit('Error from server (NotFound): configmaps "comments-api-deploy-lock" not found')
    sys.exit(0)
if "get" in args and "deployment" in args:
    if fail == "read" or (fail == "unreadable" and image.exists()):
        sys.exit("Unable to connect to the server: net/http: TLS handshake timeout")
    before = "127.0.0.1:5000/comments-api@sha256:" + "0" * 64
    print(image.read_text() if image.exists() else before, end="")
    sys.exit(0)
if "apply" in args:  # the pinned kustomization's directory is named after its environment
    (state / f"comments-{pathlib.Path(arg('-k')).name}.image").write_text("applied")
    sys.exit(0)
if "port-forward" in args:
    (state / "port-forward.pid").write_text(str(os.getpid()))
    if fail == "hold":  # a tunnel that takes connections and never answers: E2E waits
        import socket, time
        listener = socket.create_server(("127.0.0.1", int(args[-1].split(":")[0])), backlog=16)
        (state / "port-forward.listening").touch()
        time.sleep(300)
    upstream = os.environ.get("FAKE_UPSTREAM")  # a real comments-api serve: forward to it
    if upstream:
        undone = f"{arg('--namespace')} rollout undo" in calls.read_text()
        if fail in ("undone-unready", "rollout-undone-unready") and undone:
            sys.exit("error: unable to forward port because pod is not running")
        import socket, threading

        def pipe(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for end in (src, dst):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        listener = socket.create_server(("127.0.0.1", int(args[-1].split(":")[0])), backlog=64)
        while True:
            client, _ = listener.accept()
            server = socket.create_connection(("127.0.0.1", int(upstream)))
            threading.Thread(target=pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=pipe, args=(server, client), daemon=True).start()
    sys.exit(0)
if "wait" in args and fail == "slow-wait":  # a migration Job that takes its time
    (state / "wait.pid").write_text(str(os.getpid()))
    import time
    time.sleep(300)
if "wait" in args and fail == "migration":
    sys.exit("error: timed out waiting for the condition on jobs/comments-api-migrate")
undone = "rollout undo" in calls.read_text()
stuck = ("rollout", "unreadable", "rollout-undone-unready")
if "rollout" in args and "status" in args and fail in stuck and not undone:
    sys.exit("error: timed out waiting for the condition")
if "get" in args and "job" in args:
    why = "Job was active longer than specified deadline"
    failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": why}
    complete = {"type": "Complete", "status": "True"}
    status = {"conditions": [failed if fail == "migration" else complete]}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m"}}
    jsonpath({**job, "status": status})
if "get" in args and "pods" in args:
    print("NAME                            READY   STATUS             RESTARTS   AGE")
    print("comments-api-6d9f7c9b7d-x2x4q   0/1     ImagePullBackOff   0          5m")
elif "get" in args and "events" in args:
    print("5m  Warning  Failed  pod/comments-api-6d9f7c9b7d-x2x4q  Failed to pull image: not found")
elif "logs" in args:
    print("psycopg.OperationalError: connection to comments-db-rw failed: Connection refused")
sys.exit(0)
"""


def stand_ins(tmp_path: Path, fail: str = "", holder: str = "") -> tuple[list[str], dict[str, str]]:
    """The command and environment of deploy.sh --target minikube against the stand-ins.
    `holder`: another run's lock is there already."""
    real = shutil.which("kubectl")
    if real is None:
        missing("kubectl (its kustomize and JSONPath run offline)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "cluster"
    state.mkdir()
    (bin_dir / "kubectl").write_text(CLUSTER)
    (bin_dir / "gpg").write_text('#!/bin/sh\necho "gpg $*" >>"$FAKE_STATE/calls.log"\n')
    (bin_dir / "curl").write_text(  # the port-forward's readiness: once it listens
        '#!/bin/sh\necho "curl $*" >>"$FAKE_STATE/calls.log"\n'
        '[ "$FAKE_FAIL" != hold ] || [ -e "$FAKE_STATE/port-forward.listening" ]\n'
    )
    (bin_dir / "docker").write_text(  # `docker image inspect` gives the image id
        '#!/bin/sh\necho "docker $*" >>"$FAKE_STATE/calls.log"\n'
        'case "$*" in "image inspect"*) echo sha256:' + "2" * 64 + " ;; esac\n"
    )
    (bin_dir / "skopeo").write_text(
        '#!/bin/sh\necho "skopeo $*" >>"$FAKE_STATE/calls.log"\necho sha256:' + "1" * 64 + "\n"
    )
    for stand_in in bin_dir.iterdir():
        stand_in.chmod(0o755)
    if holder:
        (state / "lock").write_text(holder)
    command = [
        str(DEPLOY),
        "--target=minikube",
        "--skip-tests",
        "--skip-scans",
        "--image=comments-api:stand-in",
        "--tag=stand-in",
        f"--state-dir={tmp_path / 'state'}",
    ]
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_STATE": str(state),
        "FAKE_FAIL": fail,
        "REAL_KUBECTL": real,
        # How long a release's /readyz through its port-forward may take: the stand-ins
        # answer at once or never, and the tests of "never" wait it out (the default is 60 s).
        "READY_TIMEOUT": str(PORT_FORWARD_WAIT),
    }
    return command, env


def stand_in_run(tmp_path: Path, fail: str = "", holder: str = "") -> tuple[str, int, str]:
    """deploy.sh --target minikube against the stand-ins: returns its output, its exit
    status and the commands it ran. `holder`: another run's lock is there already."""
    command, env = stand_ins(tmp_path, fail, holder)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    return (
        proc.stdout + proc.stderr,
        proc.returncode,
        (tmp_path / "cluster" / "calls.log").read_text(),
    )


# What a machine without them answers: BusyBox's setsid and coreutils before 8.31 refuse
# the option (the real tools run for every other call).
OLD_TOOLS = {
    "setsid": (
        "--wait",
        "setsid: unrecognized option '--wait'",
        1,
    ),
    "env": (
        "--default-signal",
        "env: unrecognized option '--default-signal=INT'",
        125,
    ),
}


@pytest.mark.parametrize("old", sorted(OLD_TOOLS))
@pytest.mark.parametrize("target", ["minikube", "local"])
def test_a_machine_without_setsid_wait_or_env_default_signal_is_refused_at_start(
    tmp_path: Path, short_tmp: Path, old: str, target: str
):
    """Every waited step runs under `env --default-signal=INT setsid --wait`: without them
    the run failed at its first step (after the lock was taken, on minikube), not at start."""
    command, env = stand_ins(tmp_path)
    option, said, code = OLD_TOOLS[old]
    real = shutil.which(old)
    assert real, old
    shim = tmp_path / "bin" / old
    shim.write_text(
        f'#!/bin/sh\ncase "$*" in *{option}*) echo "{said}" >&2; exit {code} ;; esac\n'
        f'exec {real} "$@"\n'
    )
    shim.chmod(0o755)
    command = ["bash", *command[:1], f"--target={target}", *command[2:]]
    # A local run refuses a --state-dir too long for haproxy's socket path before this
    # check, and a tmp_path under pytest-xdist is that long.
    command = [
        f"--state-dir={short_tmp / 'state'}" if a.startswith("--state-dir=") else a for a in command
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    lacks = {"setsid": "setsid with --wait", "env": "env with --default-signal"}
    assert f"this machine lacks: {lacks[old]}" in out, out[-3000:]
    assert lacks[({"setsid", "env"} - {old}).pop()] not in out
    calls = tmp_path / "cluster" / "calls.log"
    assert not calls.exists() or calls.read_text() == "", "no tool ran: not kubectl, not docker"
    assert "make --no-print-directory" not in out, "no tests ran"


def test_a_second_deploy_stops_on_the_cluster_lock_and_leaves_it(tmp_path: Path):
    # Two runs at once each deleted the other's migration Job and waited on it, and one's
    # `rollout undo` could take production back from the other's release.
    holder = "ci-runner-7 pid 4242, release 1a2b3c4d5e6f, since 2026-01-01T10:00:00Z"
    out, rc, calls = stand_in_run(tmp_path, holder=holder)
    assert rc == 1, out[-3000:]
    assert f"comments-production/configmap/comments-api-deploy-lock is held by {holder}" in out
    # How to clear the lock of a run that was killed.
    clear = "kubectl --context comments --namespace comments-production delete configmap"
    assert f"{clear} comments-api-deploy-lock" in out
    assert "docker" not in calls, "nothing is built or pushed"
    assert " apply " not in calls
    assert "delete job" not in calls
    assert "delete configmap" not in calls, "another run's lock is not ours to remove"
    assert (tmp_path / "cluster" / "lock").read_text() == holder


def test_a_failed_migration_says_why_rolls_staging_back_and_unlocks(tmp_path: Path):
    # `kubectl wait` says only "timed out waiting for the condition": the Job's failure
    # reason and the migration's own error were for the SRE to go and find.
    out, rc, calls = stand_in_run(tmp_path, fail="migration")
    assert rc == 1, out[-3000:]
    assert "the migration Job comments-api-migrate did not complete in staging" in out
    assert "job/comments-api-migrate Failed=True: DeadlineExceeded: Job was active longer" in out
    assert "psycopg.OperationalError: connection to comments-db-rw failed" in out
    assert "ROLLBACK staging" in out
    assert "--namespace comments-staging rollout undo deployment/comments-api" in calls
    assert "pipeline-kustomize/production" not in calls, "production is never deployed"
    assert "comments-production rollout" not in calls
    assert "delete configmap comments-api-deploy-lock" in calls
    assert not (tmp_path / "cluster" / "lock").exists(), "the run's lock goes at its exit"


def test_a_rollout_stuck_on_an_image_pull_says_why_and_rolls_back(tmp_path: Path):
    out, rc, calls = stand_in_run(tmp_path, fail="rollout")
    assert rc == 1, out[-3000:]
    assert "the rollout of staging did not complete" in out
    assert "comments-api-6d9f7c9b7d-x2x4q   0/1     ImagePullBackOff" in out
    assert "Failed to pull image: not found" in out
    assert "--namespace comments-staging rollout undo deployment/comments-api" in calls
    assert not (tmp_path / "cluster" / "lock").exists()


def test_a_deployment_that_cannot_be_read_is_not_taken_for_none(tmp_path: Path):
    # A read error was taken for "no Deployment yet": the run went on and applied, and its
    # rollback decision then compared two failed reads.
    out, rc, calls = stand_in_run(tmp_path, fail="read")
    assert rc == 1, out[-3000:]
    assert "cannot read deployment/comments-api in comments-staging" in out
    assert "staging is left as it is" in out
    assert "delete job" not in calls
    assert " apply " not in calls
    assert "rollout undo" not in calls
    assert "staging serves nothing yet" not in out


def test_a_deployment_unreadable_after_the_apply_is_not_called_unchanged(tmp_path: Path):
    # It said "staging was not changed by this run (it serves nothing)", which nobody knew.
    out, rc, calls = stand_in_run(tmp_path, fail="unreadable")
    assert rc == 1, out[-3000:]
    assert " apply -k " in calls
    assert "cannot read deployment/comments-api in comments-staging to tell whether" in out
    assert "was not changed by this run" not in out
    assert "rollout undo" not in calls


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"


def start_in_background(
    command: list[str], env: dict[str, str], out: Path, cwd: Path = ROOT
) -> subprocess.Popen:
    """deploy.sh in a session of its own (signals go to its group), its output in ``out``."""
    with open(out, "w") as sink:
        return subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


@pytest.mark.parametrize(
    ("how", "code"),
    [("SIGINT to the process group (Ctrl-C)", 130), ("SIGTERM to deploy.sh alone", 143)],
)
def test_a_run_interrupted_during_e2e_ends_its_port_forward(tmp_path: Path, how: str, code: int):
    # The port-forward was stopped only when the checks returned: a run killed during E2E
    # left `kubectl port-forward` running, a tunnel into the cluster nobody owned.
    command, env = stand_ins(tmp_path, fail="hold")
    out = tmp_path / "deploy.out"
    pid_file = tmp_path / "cluster" / "port-forward.pid"
    forward = 0
    proc = start_in_background(command, env, out)
    try:
        deadline = time.monotonic() + 90
        while "pipeline_e2e.py e2e" not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.1)
        forward = int(pid_file.read_text())
        assert alive(forward)
        time.sleep(0.5)  # the checks' first request is on its way, and waits
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == code, out.read_text()[-3000:]
        deadline = time.monotonic() + 10
        while alive(forward) and time.monotonic() < deadline:
            time.sleep(0.1)
        log = out.read_text()
        assert not alive(forward), f"kubectl port-forward (pid {forward}) outlived the run"
        assert "PIPELINE STOPPED" in log, log[-3000:]
        assert not (tmp_path / "cluster" / "lock").exists(), "the lock goes too"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if forward and alive(forward):
            os.kill(forward, signal.SIGKILL)


@pytest.mark.parametrize(
    ("how", "code"),
    [("SIGTERM to deploy.sh alone", 143), ("SIGINT to the process group (Ctrl-C)", 130)],
)
def test_a_run_interrupted_during_the_migration_wait_stops_at_once(
    tmp_path: Path, how: str, code: int
):
    # bash runs a trap only when the foreground command returns: a run stopped (a CI's
    # SIGTERM) during `kubectl wait --timeout=600s` went on waiting, up to 10 minutes.
    command, env = stand_ins(tmp_path, fail="slow-wait")
    out = tmp_path / "deploy.out"
    pid_file = tmp_path / "cluster" / "wait.pid"
    waiting = 0
    proc = start_in_background(command, env, out)
    try:
        deadline = time.monotonic() + 90
        while not pid_file.exists() or not pid_file.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.1)
        waiting = int(pid_file.read_text())
        assert alive(waiting)
        started = time.monotonic()
        if how.startswith("SIGINT"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == code, out.read_text()[-3000:]
        assert time.monotonic() - started < 5, "the run went on waiting after the signal"
        log = out.read_text()
        assert "wait --for=condition=complete job/comments-api-migrate" in log
        assert "PIPELINE STOPPED" in log, log[-3000:]
        assert not alive(waiting), f"the stand-in `kubectl wait` (pid {waiting}) outlived the run"
        left = [
            p.name
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and p.name != str(proc.pid) and in_group(int(p.name), proc.pid)
        ]
        assert not left, f"processes of the run left behind: {left}"
        assert not (tmp_path / "cluster" / "lock").exists(), "the lock goes too"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if waiting and alive(waiting):
            os.kill(waiting, signal.SIGKILL)


def in_group(pid: int, group: int) -> bool:
    """Whether a live process (not a zombie) is in the process group ``group``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] != "Z" and int(fields[2]) == group


# --- long steps of deploy.sh's own (k6, the smoke hook): an interrupt does not wait for them --
# Real k6 and a real hook against a real `comments-api serve` behind the port-forward
# stand-in; LOAD_DURATION and --prod-smoke-hook make them long.
def child_of(parent: int, argv: list[str]) -> int:
    """A live child of ``parent`` whose arguments hold ``argv`` in a row; 0 when none (the
    subshells of deploy.sh have its own arguments, the hook among them)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
            args = (entry / "cmdline").read_bytes().decode().split("\0")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        held = any(args[i : i + len(argv)] == argv for i in range(len(args)))
        if fields[0] != "Z" and int(fields[1]) == parent and held:
            return int(entry.name)
    return 0


def group_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[2])


def await_step(
    proc: subprocess.Popen[bytes], out: Path, find: Callable[[], int], deadline: float
) -> int:
    """The PID ``find`` returns once the step runs; deploy.sh must still be running, and
    the step must come before ``deadline`` (its output says why not)."""
    while not (step := find()):
        assert proc.poll() is None, out.read_text()[-3000:]
        assert time.monotonic() < deadline, out.read_text()[-3000:]
        time.sleep(0.1)
    return step


def interrupt(
    proc: subprocess.Popen[bytes], how: str, groups: set[int]
) -> tuple[int, list[int], float]:
    """Interrupt deploy.sh as ``how`` says: SIGINT to its process group (Ctrl-C) or SIGTERM
    to it. Returns its exit status (-1: still running 30 s after the signal, which waited
    for the step), the processes left in ``groups`` and the seconds to the exit."""
    started = time.monotonic()
    if how.startswith("SIGINT"):
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = -1
    took = time.monotonic() - started
    left = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit()
        and int(p.name) != proc.pid
        and any(in_group(int(p.name), group) for group in groups)
    ]
    return rc, left, took


def kill_groups(proc: subprocess.Popen[bytes], groups: set[int]) -> None:
    """Whatever the test left running of the run's and its steps' process groups."""
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    proc.wait()


class Interrupted(NamedTuple):
    """A run of deploy.sh interrupted during one of its steps."""

    rc: int  # its exit status; -1: still running 30 s after the signal
    log: str  # its output
    step: int  # the PID of the step's process
    left: list[int]  # processes left of the run's and of the step's process groups
    took: float  # seconds from the signal to the exit


def assert_stopped_at_once(tmp_path: Path, run: Interrupted, code: int, what: str) -> None:
    """What an interrupt guarantees, whatever the step (``what``): the run's exit status is
    ``code`` (130 for SIGINT, 143 for SIGTERM) within 5 s of the signal, it says "PIPELINE
    STOPPED", the step's process and everything of the run's and the step's process groups
    are gone, and so is the cluster lock."""
    assert run.rc == code, run.log[-3000:]
    assert run.took < 5, f"the run went on with {what} after the signal"
    assert "PIPELINE STOPPED" in run.log, run.log[-3000:]
    assert not alive(run.step), f"{what} (pid {run.step}) outlived the run"
    assert not run.left, f"processes of the run left behind: {run.left}"
    assert not (tmp_path / "cluster" / "lock").exists(), "the lock goes too"


def interrupted_during(
    tmp_path: Path,
    how: str,
    argv: list[str],
    extra_env: dict[str, str],
    args: list[str],
    ready: Path | None = None,
    real: tuple[str, ...] = (),
    scripts: dict[str, str] | None = None,
) -> Interrupted:
    """deploy.sh --target minikube, interrupted (``how``) while a child whose arguments hold
    ``argv`` runs (child_of). ``ready``: a file the step writes once it is under way;
    ``real``: the tools run for real instead of their stand-ins (curl always is);
    ``scripts``: stand-ins of other behaviour, by tool name."""
    if not (ROOT / ".venv" / "bin" / "k6").exists():
        missing("k6 in .venv (make venv)")
    command, env = stand_ins(tmp_path)
    bin_dir = tmp_path / "bin"
    for tool in ("curl", *real):  # curl: readiness through the port-forward
        (bin_dir / tool).unlink()
    for tool, script in (scripts or {}).items():
        (bin_dir / tool).write_text(script)
    (bin_dir / "gpg").write_text(  # the signing key's fingerprint, for skopeo --sign-by
        '#!/bin/sh\necho "gpg $*" >>"$FAKE_STATE/calls.log"\n'
        f'case "$*" in *--list-secret-keys*) echo "fpr:::::::::{FINGERPRINT}:" ;; esac\n'
    )
    out = tmp_path / "deploy.out"
    service_env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
    }
    step = 0
    groups: set[int] = set()
    with ServiceProcess(service_env, tmp_path, workers=1) as service:
        env = {**env, "FAKE_UPSTREAM": str(service.port), "LOAD_VUS": "1", **extra_env}
        proc = start_in_background([*command, *args], env, out)
        groups.add(proc.pid)
        try:
            deadline = time.monotonic() + 120
            step = await_step(proc, out, lambda: child_of(proc.pid, argv), deadline)
            groups.add(group_of(step))
            while ready is not None and not ready.exists():
                assert proc.poll() is None, out.read_text()[-3000:]
                assert time.monotonic() < deadline, out.read_text()[-3000:]
                time.sleep(0.1)
            time.sleep(1)  # under way
            groups.add(group_of(step))  # found before its setsid, it was still in the run's
            rc, left, took = interrupt(proc, how, groups)
        finally:
            kill_groups(proc, groups)
    log = out.read_text()
    print(log)
    return Interrupted(rc, log, step, left, took)


INTERRUPTS = pytest.mark.parametrize(
    ("how", "code"),
    [("SIGTERM to deploy.sh alone", 143), ("SIGINT to the process group (Ctrl-C)", 130)],
)


@INTERRUPTS
def test_a_run_interrupted_during_the_load_test_stops_at_once(tmp_path: Path, how: str, code: int):
    # k6 ran in the foreground: a CI's SIGTERM waited for the whole LOAD_DURATION.
    run = interrupted_during(
        tmp_path, how, ["run", "--no-usage-report"], {"LOAD_DURATION": "5m"}, []
    )
    assert_stopped_at_once(tmp_path, run, code, "the load test (k6)")
    assert "load test on staging: k6" in run.log
    assert not alive(int((tmp_path / "cluster" / "port-forward.pid").read_text()))


@INTERRUPTS
def test_a_run_interrupted_during_the_smoke_hook_stops_it_and_its_children(
    tmp_path: Path, how: str, code: int
):
    # The hook ran in the foreground: a CI's SIGTERM waited for it; and ended by its PID
    # alone, the processes the hook started would outlive the run.
    hook = '--prod-smoke-hook=echo "$$" >"$FAKE_STATE/hook.pid"; sleep 300; true'
    run = interrupted_during(tmp_path, how, ["bash", "-c"], {"LOAD_DURATION": "1s"}, [hook])
    # Its processes (the hook's sleep among them) are in the step's process group.
    assert_stopped_at_once(tmp_path, run, code, "the smoke hook")
    assert int((tmp_path / "cluster" / "hook.pid").read_text()) == run.step
    assert "sleep 300" not in run.log, "the hook's command is never printed"


# A hook whose first process ends at once at SIGINT while its child cleans up for 1 s (as
# make, which may exit before pytest's teardown is done).
CLEANING_HOOK = (
    '--prod-smoke-hook=echo "$$" >"$FAKE_STATE/hook.pid"; python3 -c \''
    "import pathlib, signal, sys, time\n"
    "state = pathlib.Path(sys.argv[1])\n"
    "def clean_up(*_):\n"
    "    time.sleep(1)\n"
    '    (state / "cleaned").touch()\n'
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGINT, clean_up)\n"
    '(state / "cleaning-ready").touch()\n'
    "time.sleep(300)\n"
    '\' "$FAKE_STATE" & sleep 300; true'
)


@INTERRUPTS
def test_an_interrupted_step_is_given_time_to_clean_up(tmp_path: Path, how: str, code: int):
    # The step's first process gone, the rest of its group was SIGKILLed at once: pytest's
    # teardown (its PostgreSQL servers) cut short when make exited first.
    state = tmp_path / "cluster"
    run = interrupted_during(
        tmp_path,
        how,
        ["bash", "-c"],
        {"LOAD_DURATION": "1s"},
        [CLEANING_HOOK],
        ready=state / "cleaning-ready",
    )
    assert_stopped_at_once(tmp_path, run, code, "the smoke hook")
    assert (state / "cleaned").exists(), "the step's child was killed while it cleaned up"
    assert run.took >= 1, "the run did not wait for the step's child to clean up"


# --- registry steps (docker push, skopeo): an interrupt does not wait for the registry -----
@contextlib.contextmanager
def registry_that_never_answers() -> Iterator[str]:
    """The address of a registry that takes connections and never answers (hung, or its
    replies lost on the way): the real docker push and skopeo inspect wait there for ever."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


def descendant_of(ancestor: int, argv: list[str]) -> int:
    """A live descendant of ``ancestor`` whose arguments hold ``argv`` in a row (a child of
    a subshell, such as `$(...)`'s, too); 0 when none."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == ancestor:
            continue
        pid = int(entry.name)
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            args = (entry / "cmdline").read_bytes().decode().split("\0")
            if not any(args[i : i + len(argv)] == argv for i in range(len(args))):
                continue
            if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] == "Z":
                continue
            parent = pid
            while parent > 1:
                parent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(") ", 1)[1].split()[1])
                if parent == ancestor:
                    return pid
    return 0


def interrupt_step(
    tmp_path: Path,
    how: str,
    command: list[str],
    env: dict[str, str],
    argv: list[str],
    cwd: Path = ROOT,
) -> Interrupted:
    """deploy.sh (``command``) interrupted (``how``) once its child whose arguments hold
    ``argv`` has run for a second."""
    out = tmp_path / "deploy.out"
    proc = start_in_background(command, env, out, cwd)
    groups = {proc.pid}
    step = 0
    try:
        deadline = time.monotonic() + 90
        step = await_step(proc, out, lambda: descendant_of(proc.pid, argv), deadline)
        groups.add(group_of(step))
        time.sleep(1)  # under way, waiting for the registry
        groups.add(group_of(step))  # found before its setsid, it was still in the run's
        rc, left, took = interrupt(proc, how, groups)
    finally:
        kill_groups(proc, groups)
    log = out.read_text()
    print(log)
    return Interrupted(rc, log, step, left, took)


@INTERRUPTS
def test_a_run_interrupted_during_the_push_stops_at_once(tmp_path: Path, how: str, code: int):
    # docker push ran in the foreground: a CI's SIGTERM waited for the push to end, which
    # against a registry that does not answer is never (the real docker and its engine).
    if shutil.which("docker") is None:
        missing("docker")
    if sh("docker", "info", check=False).returncode != 0:
        missing("a running Docker engine")
    suffix = uuid.uuid4().hex[:8]
    image = f"comments-api-push-test:{suffix}"
    member = tarfile.TarInfo("release.txt")
    member.size = 6
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(b"pushed"))
    command, env = stand_ins(tmp_path)
    (tmp_path / "bin" / "docker").unlink()  # the real one
    # A tag of its own: deploy.sh tags the image comments-api:TAG in the real engine, and
    # this test's other run (or any test's) removing a shared comments-api:stand-in between
    # that `docker tag` and its `docker image inspect` would fail this one.
    tag = f"push-{suffix}"
    command = [a for a in command if not a.startswith(("--image=", "--tag="))]
    command += [f"--image={image}", f"--tag={tag}"]
    with registry_that_never_answers() as registry:
        pushed = f"{registry}/comments-api:{tag}"
        try:
            imported = subprocess.run(
                ["docker", "import", "-", image], input=layer.getvalue(), capture_output=True
            )
            assert imported.returncode == 0, imported.stderr
            run = interrupt_step(
                tmp_path, how, command, {**env, "DEV_REGISTRY": registry}, ["push", "--quiet"]
            )
        finally:
            # deploy.sh tags the image comments-api:TAG (its IMAGE) too.
            sh("docker", "rmi", image, f"comments-api:{tag}", pushed, check=False)
    assert f"+ docker push --quiet {pushed}" in run.log
    assert_stopped_at_once(tmp_path, run, code, "docker push")


@INTERRUPTS
def test_a_run_interrupted_while_skopeo_asks_the_registry_stops_at_once(
    tmp_path: Path, how: str, code: int
):
    # skopeo inspect ran inside $(...): bash runs a trap only once a command substitution
    # has returned, so a CI's SIGTERM waited for a registry that does not answer.
    for name in ("skopeo", "git"):
        if shutil.which(name) is None:
            missing(name)
    repo, tag = commit_copy(tmp_path)  # its own tag: the run asks the registry for it first
    command, env = stand_ins(tmp_path)
    (tmp_path / "bin" / "skopeo").unlink()  # the real one
    command = [
        str(repo / "scripts" / "deploy.sh"),
        *[a for a in command[1:] if "--tag" not in a and "--image" not in a],
    ]
    with registry_that_never_answers() as registry:
        run = interrupt_step(
            tmp_path, how, command, {**env, "DEV_REGISTRY": registry}, ["inspect"], cwd=repo
        )
    assert f"docker://{registry}/comments-api:{tag}" in run.log
    assert_stopped_at_once(tmp_path, run, code, "skopeo inspect")


@INTERRUPTS
def test_a_run_interrupted_while_skopeo_promotes_stops_at_once_and_claims_nothing(
    tmp_path: Path, dev_registry: str, how: str, code: int
):
    # promote's `skopeo copy` to a prod registry that does not answer: run in the foreground
    # (`run`, not `run_waited`), a CI's SIGTERM would wait as long as the registry does (for
    # ever), holding the lock; Ctrl-C reaches a foreground skopeo too, so SIGTERM is the case
    # that tells. Staging passes for real (E2E and k6 through the port-forward); the copy is
    # the real skopeo's, from the real dev registry to one that never answers.
    seed_image(dev_registry, "stand-in", tmp_path)  # what the stand-in `docker push` pushed
    with registry_that_never_answers() as prod:
        run = interrupted_during(
            tmp_path,
            how,
            ["copy", "--quiet"],
            {"LOAD_DURATION": "1s", "DEV_REGISTRY": dev_registry, "PROD_REGISTRY": prod},
            [],
            real=("skopeo",),
        )
    assert f"docker://{prod}/comments-api:stand-in" in run.log  # it got as far as the copy
    assert_stopped_at_once(tmp_path, run, code, "skopeo copy")
    # Nothing is said or done as if the release were in the prod registry, signed or live.
    assert "prod registry:" not in run.log, run.log[-3000:]
    assert "verify the signature" not in run.log
    assert "PIPELINE OK" not in run.log
    assert not list((tmp_path / "state" / "sigstore").rglob("signature-*")), "no signature"
    calls = (tmp_path / "cluster" / "calls.log").read_text()
    assert "pipeline-kustomize/production" not in calls, "production is never deployed"
    assert "comments-production rollout" not in calls


@INTERRUPTS
def test_a_run_interrupted_while_skopeo_checks_the_promoted_copy_stops_at_once(
    tmp_path: Path, how: str, code: int
):
    # After the copy, promote asks the prod registry which digest its tag now names
    # (capture_waited). A registry that stops answering there must not hold the run and
    # its lock; nothing may be said as if the copy were checked. The stand-in skopeo copies
    # (a log line) and then waits for ever on that question, as the real one would.
    prod = "127.0.0.1:9"  # never contacted: skopeo is a stand-in here
    ask = ["inspect", "--tls-verify=false", "--format", "{{.Digest}}"]
    skopeo = (
        '#!/bin/sh\necho "skopeo $*" >>"$FAKE_STATE/calls.log"\n'
        f'case "$*" in "{" ".join(ask)} docker://{prod}/"*) while :; do sleep 1; done ;; esac\n'
        "echo sha256:" + "1" * 64 + "\n"
    )
    run = interrupted_during(
        tmp_path,
        how,
        [*ask, f"docker://{prod}/comments-api:stand-in"],
        {"LOAD_DURATION": "1s", "PROD_REGISTRY": prod},
        [],
        scripts={"skopeo": skopeo},
    )
    calls = (tmp_path / "cluster" / "calls.log").read_text()
    copied = calls.index(" copy --quiet --preserve-digests ")  # the copy went first
    assert calls.index(f"skopeo {' '.join(ask)} docker://{prod}/", copied) > copied
    assert_stopped_at_once(tmp_path, run, code, "skopeo inspect of the promoted copy")
    assert "prod registry:" not in run.log, run.log[-3000:]
    assert "verify the signature" not in run.log
    assert "PIPELINE OK" not in run.log
    assert "pipeline-kustomize/production" not in calls, "production is never deployed"


# --- a release that fails production's smoke test: rolled back, and the rollback checked ---
# Staging's E2E and k6 and production's smoke test reach a real `comments-api serve`
# through the stand-in port-forward; production's --prod-smoke-hook rejects the release.
FINGERPRINT = "A" * 40
BEFORE = "127.0.0.1:5000/comments-api@sha256:" + "0" * 64  # what the stand-in serves before


def production_run(tmp_path: Path, fail: str = "") -> tuple[str, int, str]:
    """deploy.sh --target minikube through staging to production, whose smoke hook fails.
    Returns the output, the exit status and the calls."""
    if not (ROOT / ".venv" / "bin" / "k6").exists():
        missing("k6 in .venv (make venv)")
    command, env = stand_ins(tmp_path, fail)
    bin_dir = tmp_path / "bin"
    (bin_dir / "curl").unlink()  # the real curl: readiness through the port-forward
    (bin_dir / "gpg").write_text(  # the signing key's fingerprint, for skopeo --sign-by
        '#!/bin/sh\necho "gpg $*" >>"$FAKE_STATE/calls.log"\n'
        f'case "$*" in *--list-secret-keys*) echo "fpr:::::::::{FINGERPRINT}:" ;; esac\n'
    )
    service_env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
    }
    with ServiceProcess(service_env, tmp_path, workers=1) as service:
        env = {**env, "FAKE_UPSTREAM": str(service.port), "LOAD_DURATION": "1s", "LOAD_VUS": "1"}
        hook = "--prod-smoke-hook=echo 'canary journey: checkout broken' >&2; exit 1"
        proc = subprocess.run(
            [*command, hook], capture_output=True, text=True, timeout=240, cwd=ROOT, env=env
        )
    out = proc.stdout + proc.stderr
    print(out)
    return out, proc.returncode, (tmp_path / "cluster" / "calls.log").read_text()


def after_undo(calls: str) -> str:
    """The calls after production's `rollout undo`."""
    return calls.split("--namespace comments-production rollout undo deployment/comments-api", 1)[1]


def test_a_rollback_after_a_failed_smoke_test_is_smoke_tested_before_exit_2(tmp_path: Path):
    # Exit 2, "rolled back automatically", came once `rollout status` completed: nobody
    # had checked that the release production went back to answers.
    out, rc, calls = production_run(tmp_path)
    assert rc == 2, out[-3000:]
    assert "production smoke hook failed: exit 1" in out
    assert out.count("production smoke hook failed") == 1, "the hook checks the new release only"
    assert "ROLLBACK production: kubectl rollout undo" in out
    rechecked = after_undo(calls)
    assert "comments-production port-forward svc/comments-api" in rechecked
    assert out.index("re-check production after the rollback") > out.index("ROLLBACK production")
    assert f"production is back on {BEFORE} and it answers its smoke test" in out
    assert "PIPELINE FAILED in production: rolled back automatically" in out
    assert not alive(int((tmp_path / "cluster" / "port-forward.pid").read_text()))
    assert not (tmp_path / "cluster" / "lock").exists()


def test_a_rollback_that_does_not_serve_is_exit_3_not_rolled_back(tmp_path: Path):
    # The previous release's pods are not ready after the undo: it said "rolled back".
    out, rc, calls = production_run(tmp_path, fail="undone-unready")
    assert rc == 3, out[-3000:]
    assert "production smoke hook failed: exit 1" in out
    assert "comments-production port-forward svc/comments-api" in after_undo(calls)
    assert f"timed out after {PORT_FORWARD_WAIT}s waiting for port-forward" in out
    assert (
        f"production was rolled back to {BEFORE}, but that release does not answer its smoke"
        " test either" in out
    )
    assert "PIPELINE FAILED in production and the rollback failed too" in out
    assert "rolled back automatically" not in out
    assert not (tmp_path / "cluster" / "lock").exists()


# --- a release stuck in staging's rollout: staging rolled back, and the rollback checked ----
def staging_run(tmp_path: Path, fail: str) -> tuple[str, int, str]:
    """deploy.sh --target minikube whose staging rollout never completes; the smoke test
    after the undo reaches a real `comments-api serve` through the stand-in port-forward.
    Returns the output, the exit status and the calls."""
    command, env = stand_ins(tmp_path, fail)
    (tmp_path / "bin" / "curl").unlink()  # the real curl: readiness through the port-forward
    service_env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
    }
    with ServiceProcess(service_env, tmp_path, workers=1) as service:
        env = {**env, "FAKE_UPSTREAM": str(service.port)}
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
        )
    out = proc.stdout + proc.stderr
    print(out)
    return out, proc.returncode, (tmp_path / "cluster" / "calls.log").read_text()


def test_a_staging_rollback_is_smoke_tested(tmp_path: Path):
    # After `rollout undo` of staging nothing asked whether staging answered: a staging
    # serving neither release went unreported, and the next runs stopped there.
    out, rc, calls = staging_run(tmp_path, fail="rollout")
    assert rc == 1, out[-3000:]
    assert "the rollout of staging did not complete" in out
    undone = calls.split("--namespace comments-staging rollout undo deployment/comments-api", 1)[1]
    assert "comments-staging port-forward svc/comments-api" in undone
    assert out.index("re-check staging after the rollback") > out.index("ROLLBACK staging")
    assert "pipeline_e2e.py smoke" in out
    assert f"staging is back on {BEFORE} and it answers its smoke test" in out
    assert "staging is down" not in out
    assert "comments-production rollout" not in calls, "production is never deployed"
    assert "PIPELINE FAILED before production (production untouched)" in out
    assert not alive(int((tmp_path / "cluster" / "port-forward.pid").read_text()))
    assert not (tmp_path / "cluster" / "lock").exists()


def test_a_staging_rollback_that_does_not_serve_is_named(tmp_path: Path):
    # The previous release's pods do not answer after the undo either: staging is down.
    out, rc, calls = staging_run(tmp_path, fail="rollout-undone-unready")
    assert rc == 1, out[-3000:]  # production untouched: still exit 1
    undone = calls.split("--namespace comments-staging rollout undo deployment/comments-api", 1)[1]
    assert "comments-staging port-forward svc/comments-api" in undone
    assert f"timed out after {PORT_FORWARD_WAIT}s waiting for port-forward" in out
    assert (
        f"staging was rolled back to {BEFORE}, but that release does not answer its smoke test"
        " either" in out
    )
    assert "staging is down (production untouched)" in out
    assert "comments-staging rollout history deployment/comments-api" in out
    assert "is back on" not in out
    assert "comments-production rollout" not in calls
    assert "PIPELINE FAILED before production (production untouched)" in out
    assert not (tmp_path / "cluster" / "lock").exists()


# --- a re-run for the same commit: the dev registry's image is taken, not rebuilt ----------
def seed_image(registry: str, tag: str, tmp_path: Path) -> str:
    """Push a small real OCI image (one layer) as comments-api:TAG with skopeo; returns
    its manifest digest, as the registry serves it."""
    layout = tmp_path / "oci"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    member = tarfile.TarInfo("release.txt")
    content = f"comments-api {tag}\n".encode()
    member.size = len(content)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(member, io.BytesIO(content))
    layer, layer_size = blob(gzip.compress(raw.getvalue(), mtime=0))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    config_digest, config_size = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = blob(json.dumps(manifest).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "seed"},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    sh(
        "skopeo",
        "copy",
        "--quiet",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{layout}:seed",
        f"docker://{registry}/comments-api:{tag}",
    )
    return manifest_digest


def commit_copy(tmp_path: Path) -> tuple[Path, str]:
    """deploy.sh and what its minikube target reads, committed in a repository of their
    own: a run's tag is then its commit's (the shared checkout may hold other uncommitted
    changes, which make it `-dirty`). The build is a stand-in that logs (the real one
    fetches wheels and runs `docker build`). Returns the repository and its tag."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(DEPLOY, repo / "scripts" / "deploy.sh")
    shutil.copytree(ROOT / "scripts" / "lib", repo / "scripts" / "lib")
    shutil.copytree(ROOT / "deploy" / "k8s", repo / "deploy" / "k8s")
    build = repo / "scripts" / "image-build.sh"
    build.write_text('#!/bin/sh\necho "image-build.sh IMAGE=$IMAGE" >>"$FAKE_STATE/calls.log"\n')
    build.chmod(0o755)
    (repo / ".venv").symlink_to(ROOT / ".venv")  # untracked: not a change of the tree
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    sh(*git, "init", "--quiet")
    sh(*git, "add", "scripts", "deploy")
    sh(*git, "commit", "--quiet", "--message", "the commit a run releases")
    return repo, sh(*git, "rev-parse", "--short=12", "HEAD").stdout.strip()


@pytest.fixture
def dev_registry(tmp_path: Path) -> Iterator[str]:
    """A real docker-registry on 127.0.0.1: its address."""
    for name in ("docker-registry", "skopeo", "git"):
        if shutil.which(name) is None:
            missing(name)
    port = free_port()
    (tmp_path / "registry").mkdir()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'registry'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while sh("curl", "-fsS", f"http://127.0.0.1:{port}/v2/", check=False).returncode:
            assert time.monotonic() < deadline, "the registry never answered"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        registry.terminate()
        registry.wait(timeout=30)


def commit_run(tmp_path: Path, registry: str, repo: Path) -> tuple[str, int, str]:
    """deploy.sh --target minikube from the repository of commit_copy (its own tag), the
    real dev registry and skopeo, and the cluster stand-in, whose migration Job fails: the
    run stops in staging, after the apply. Returns the output, the exit status, the calls."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    command, env = stand_ins(tmp_path, fail="migration")
    (tmp_path / "bin" / "skopeo").unlink()  # the real one, against the real registry
    command = [
        str(repo / "scripts" / "deploy.sh"),
        *[a for a in command[1:] if "--tag" not in a and "--image" not in a],
    ]
    env["DEV_REGISTRY"] = registry
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=repo, env=env)
    return (
        proc.stdout + proc.stderr,
        proc.returncode,
        (tmp_path / "cluster" / "calls.log").read_text(),
    )


def pinned(repo: Path) -> str:
    return (repo / "build" / "pipeline-kustomize" / "staging" / "kustomization.yaml").read_text()


def test_a_rerun_for_the_same_commit_deploys_the_digest_already_pushed(
    tmp_path: Path, dev_registry: str
):
    # A second build of the commit pushed another digest under its tag: the tag moved off
    # the image the first run tested, and the re-run released an image never tested.
    repo, tag = commit_copy(tmp_path)
    pushed = seed_image(dev_registry, tag, tmp_path)
    out, rc, calls = commit_run(tmp_path, dev_registry, repo)
    assert rc == 1, out[-3000:]  # the stand-in cluster's migration fails, after the apply
    assert (
        f"pushed already by an earlier run: release {tag} = {dev_registry}/comments-api@{pushed}"
        in out
    )
    assert "image-build.sh" not in calls, "not built again"
    assert "docker tag" not in calls
    assert "docker push" not in calls
    assert f"digest: {pushed}" in pinned(repo)
    assert " apply -k " in calls
    # The tag still names the image the first run pushed.
    inspect = sh(
        "skopeo",
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        f"docker://{dev_registry}/comments-api:{tag}",
    )
    assert inspect.stdout.strip() == pushed


def test_a_commit_not_pushed_yet_is_built_and_a_dirty_tree_never_looks(
    tmp_path: Path, dev_registry: str
):
    repo, tag = commit_copy(tmp_path)
    out, rc, calls = commit_run(tmp_path / "clean", dev_registry, repo)
    assert rc == 1, out[-3000:]
    assert "not pushed yet: building it" in out
    assert f"image-build.sh IMAGE=comments-api:{tag}" in calls
    assert f"docker push --quiet {dev_registry}/comments-api:{tag}" in calls
    # An uncommitted change: the tag names no commit's tree, so nothing is taken from it.
    seed_image(dev_registry, f"{tag}-dirty", tmp_path / "dirty-seed")
    with open(repo / "deploy" / "k8s" / "overlays" / "staging" / "kustomization.yaml", "a") as f:
        f.write("# an uncommitted change\n")
    out, rc, calls = commit_run(tmp_path / "dirty", dev_registry, repo)
    assert "this commit's image in the dev registry?" not in out
    assert f"image-build.sh IMAGE=comments-api:{tag}-dirty" in calls
    assert f"docker push --quiet {dev_registry}/comments-api:{tag}-dirty" in calls


def test_a_dev_registry_that_cannot_say_stops_the_run_before_the_build(tmp_path: Path):
    for name in ("skopeo", "git"):
        if shutil.which(name) is None:
            missing(name)
    registry = f"127.0.0.1:{free_port()}"  # nobody listens there
    repo, tag = commit_copy(tmp_path)
    out, rc, calls = commit_run(tmp_path, registry, repo)
    assert rc == 1, out[-3000:]
    assert f"cannot tell whether {registry}/comments-api:{tag} exists" in out
    assert "connection refused" in out
    assert "image-build.sh" not in calls
    assert "docker" not in calls
    assert " apply " not in calls
    assert not (tmp_path / "cluster" / "lock").exists()


def test_a_port_forward_that_never_answers_fails_the_smoke_test_in_time(tmp_path: Path):
    # curl had no time limit of its own: a tunnel that took the connection and never
    # answered held the readiness wait, and the run, past its deadline.
    command, env = stand_ins(tmp_path, fail="hold")
    (tmp_path / "bin" / "curl").unlink()  # the real curl, against the silent tunnel
    out = tmp_path / "deploy.out"
    forward = 0
    proc = start_in_background(command, env, out)
    try:
        rc = proc.wait(timeout=90)
        log = out.read_text()
        assert rc == 1, log[-3000:]
        assert f"timed out after {PORT_FORWARD_WAIT}s waiting for port-forward" in log
        assert "pipeline_e2e.py e2e" not in log, "no check ran without a tunnel"
        assert "ROLLBACK staging" in log
        forward = int((tmp_path / "cluster" / "port-forward.pid").read_text())
        assert not alive(forward)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pid_file = tmp_path / "cluster" / "port-forward.pid"
        forward = forward or (int(pid_file.read_text()) if pid_file.exists() else 0)
        if forward and alive(forward):
            os.kill(forward, signal.SIGKILL)
