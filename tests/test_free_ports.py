"""scripts/free_ports.py: the ports deploy.sh's local stacks draw, and who else may have them.

A stack's replicas bind their ports minutes after the stack drew them from the kernel
(``bind`` to port 0, then released), so a second stack started beside it, or any program's
``bind(0)`` or outgoing connection, could be handed one of them. The script runs here for
real, on a registry and a port range of the test's own.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "free_ports.py"


def free_block(size: int) -> tuple[int, int]:
    """`size` consecutive ports free now, below the ephemeral range, as a
    DEPLOY_PORT_RANGE. Chosen at random, so that tests on other xdist workers (each with a
    registry of its own) are not drawing from the same block at the same moment."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    starts = list(range(low - 9000, low - size, size))
    random.shuffle(starts)
    for start in starts[:200]:
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return start, start + size - 1
    pytest.fail(f"no {size} consecutive free ports below {low}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    low, high = free_block(12)
    return {
        **os.environ,
        "DEPLOY_PORTS_DIR": str(tmp_path / "registry"),
        "DEPLOY_PORT_RANGE": f"{low}-{high}",
    }


def span(env: dict[str, str]) -> set[int]:
    low, high = map(int, env["DEPLOY_PORT_RANGE"].split("-"))
    return set(range(low, high + 1))


def draw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30
    )


def stack(tmp_path: Path, name: str) -> Path:
    """A state directory holding a stack, as deploy.sh leaves it (its run may be gone)."""
    state = tmp_path / name
    state.mkdir()
    (state / "stack.env").write_text(f"STACK={name}\n")
    return state


def ports(proc: subprocess.CompletedProcess[str]) -> list[int]:
    assert proc.returncode == 0, proc.stderr
    return [int(p) for p in proc.stdout.split()]


def test_a_stacks_ports_are_never_handed_to_another(env: dict[str, str], tmp_path: Path):
    a = ports(draw(env, "6", "--stack", "a", "--state", str(stack(tmp_path, "a"))))
    b = ports(draw(env, "6", "--stack", "b", "--state", str(stack(tmp_path, "b"))))
    assert len(set(a)) == len(set(b)) == 6
    # The kernel would hand these out again at once: both runs are over, every port closed.
    assert set(a).isdisjoint(b)
    assert set(a) | set(b) == span(env)
    # Nothing left for a third stack, nor for a port-forward's one port.
    third = draw(env, "1")
    assert third.returncode == 1
    assert f"only 0 of 1 ports free in {env['DEPLOY_PORT_RANGE']}" in third.stderr
    assert "12 reserved by other stacks" in third.stderr


def test_a_reservation_ends_with_its_stack(env: dict[str, str], tmp_path: Path):
    state_a = stack(tmp_path, "a")
    a = ports(draw(env, "6", "--stack", "a", "--state", str(state_a)))
    ports(draw(env, "6", "--stack", "b", "--state", str(stack(tmp_path, "b"))))
    registry = Path(env["DEPLOY_PORTS_DIR"])
    # a's state directory gone (its --down ran, or it was removed by hand): stale.
    (state_a / "stack.env").unlink()
    assert sorted(ports(draw(env, "6"))) == sorted(a)
    assert not (registry / "a.ports").exists()
    # b's --down releases it.
    assert draw(env, "release", "b").returncode == 0
    assert not (registry / "b.ports").exists()
    assert set(ports(draw(env, "12"))) == span(env)


def test_a_run_still_starting_its_stack_keeps_its_ports(env: dict[str, str], tmp_path: Path):
    # Between the draw and its first stack.env, only the run's PID says the stack is coming.
    starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        empty = tmp_path / "starting"
        empty.mkdir()
        mine = ports(
            draw(env, "8", "--stack", "s", "--state", str(empty), "--pid", str(starting.pid))
        )
        assert set(ports(draw(env, "4"))) == span(env) - set(mine)
    finally:
        starting.kill()
        starting.wait()
    # The run died before writing its stack: the reservation is dropped.
    assert set(ports(draw(env, "12"))) == span(env)


def test_ports_in_use_are_passed_over(env: dict[str, str]):
    busy = socket.socket()
    busy_port = min(span(env))
    busy.bind(("127.0.0.1", busy_port))
    busy.listen()
    try:
        assert set(ports(draw(env, "11"))) == span(env) - {busy_port}
        assert draw(env, "12").returncode == 1
    finally:
        busy.close()


def test_stacks_drawing_at_once_get_distinct_ports(env: dict[str, str], tmp_path: Path):
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "2",
                "--stack",
                f"s{i}",
                "--state",
                str(stack(tmp_path, f"s{i}")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(6)
    ]
    drawn: list[int] = []
    for run in runs:
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        drawn += [int(p) for p in out.split()]
    assert sorted(drawn) == sorted(span(env))


def test_by_default_ports_come_from_below_the_ephemeral_range(tmp_path: Path):
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    env = {**os.environ, "DEPLOY_PORTS_DIR": str(tmp_path / "registry")}
    env.pop("DEPLOY_PORT_RANGE", None)
    drawn = ports(draw(env, "30"))
    assert len(set(drawn)) == 30
    assert all(low - 10_000 <= p < low for p in drawn), (low, drawn)


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["0"], {}),
        (["2", "--stack", "../x"], {}),
        (["release", "a/b"], {}),
        (["1"], {"DEPLOY_PORT_RANGE": "9000-80"}),
        (["1"], {"DEPLOY_PORT_RANGE": "80-90"}),
    ],
)
def test_bad_usage_is_refused(env: dict[str, str], args: list[str], extra: dict[str, str]):
    proc = draw({**env, **extra}, *args)
    assert proc.returncode == 64, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert not list(Path(env["DEPLOY_PORTS_DIR"]).glob("*.ports"))
