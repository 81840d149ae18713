"""Ports on 127.0.0.1 for scripts/deploy.sh's local stacks, none held by another stack.

    python3 scripts/free_ports.py N                    # N free ports, for now
    python3 scripts/free_ports.py N --stack NAME --state DIR --pid PID
                                                       # N ports reserved for a stack
    python3 scripts/free_ports.py release NAME         # the stack's reservation ends

A stack's replicas bind their ports minutes after the stack drew them, and each rollout
frees and binds them again. Ports asked of the kernel (``bind`` to port 0) sat free in that
time, so another stack started beside it, or any program's ``bind(0)`` or outgoing
connection, could be handed one of them, and the replica then failed to start. So ports are
drawn from outside the kernel's ephemeral range (``ip_local_port_range``), which neither
``bind(0)`` nor ``connect()`` hands out, and a stack's ports are written to a registry that
every later draw on this machine skips, under one lock.

A reservation lasts while its run (``--pid``) is alive or its state directory still holds
the stack (``stack.env``); deploy.sh's ``--down`` releases it, and one left by a run that
was killed and whose state directory is gone is dropped at the next draw.

Environment: DEPLOY_PORT_RANGE (``LOW-HIGH``; default: the 10,000 ports below the
ephemeral range), DEPLOY_PORTS_DIR (the registry; default ~/.cache/comments-api/ports).
Standard library only. Exit status 1 when too few ports are free, 64 on bad usage.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import random
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_SPAN = 10_000
# Below this, ports are well known and need privileges.
LOWEST = 1024


class Refused(Exception):
    """A draw that cannot be made; `status` is the exit status to end with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def registry() -> Path:
    # The user's own, not a fixed /tmp path another user could create first.
    given = os.environ.get("DEPLOY_PORTS_DIR")
    return Path(given) if given else Path.home() / ".cache" / "comments-api" / "ports"


def port_range() -> tuple[int, int]:
    """Where ports are drawn from: DEPLOY_PORT_RANGE, or the span below the ephemeral range."""
    given = os.environ.get("DEPLOY_PORT_RANGE")
    if given:
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", given)
        if not match or not LOWEST <= int(match[1]) <= int(match[2]) <= 65535:
            raise Refused(
                f"free_ports: DEPLOY_PORT_RANGE={given!r} is not LOW-HIGH with "
                f"{LOWEST} <= LOW <= HIGH <= 65535",
                64,
            )
        return int(match[1]), int(match[2])
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(LOWEST, low - DEFAULT_SPAN), low - 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True


def _reservation_live(text: str) -> bool:
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "")
    # 0 is no run (os.kill(0, ...) would ask about our own process group).
    if pid.isdigit() and int(pid) > 0 and _alive(int(pid)):
        return True
    state = fields.get("state", "")
    return state != "" and (Path(state) / "stack.env").is_file()


def _reserved(directory: Path, excluding: str | None) -> set[int]:
    """Ports of every live reservation but `excluding`'s; stale ones are removed."""
    ports: set[int] = set()
    for entry in directory.glob("*.ports"):
        if entry.stem == excluding:
            continue
        try:
            text = entry.read_text()
        except FileNotFoundError:
            continue
        if not _reservation_live(text):
            entry.unlink(missing_ok=True)
            continue
        for line in text.splitlines():
            if line.startswith("ports="):
                ports.update(int(p) for p in line[len("ports=") :].split() if p.isdigit())
    return ports


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def draw(count: int, stack: str | None = None, state: str | None = None, pid: int = 0) -> list[int]:
    """`count` distinct ports free now, none reserved by another stack; with `stack`, reserved
    for it (replacing its earlier reservation)."""
    low, high = port_range()
    directory = registry()
    with _locked(directory):
        taken = _reserved(directory, excluding=stack)
        candidates = [p for p in range(low, high + 1) if p not in taken]
        random.SystemRandom().shuffle(candidates)
        held: list[socket.socket] = []
        try:
            for port in candidates:
                if len(held) == count:
                    break
                sock = socket.socket()
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    sock.close()
                    continue
                held.append(sock)
            ports = [s.getsockname()[1] for s in held]
        finally:
            for s in held:
                s.close()
        if len(ports) < count:
            raise Refused(
                f"free_ports: only {len(ports)} of {count} ports free in {low}-{high} "
                f"({len(taken)} reserved by other stacks in {directory}); set "
                "DEPLOY_PORT_RANGE, or tear down stacks no longer needed (deploy.sh --down)",
                1,
            )
        if stack is not None:
            body = f"state={state or ''}\npid={pid}\nports={' '.join(map(str, ports))}\n"
            partial = directory / f".{stack}.ports.{os.getpid()}"
            partial.write_text(body)
            partial.replace(directory / f"{stack}.ports")
    return ports


def release(stack: str) -> None:
    directory = registry()
    with _locked(directory):
        (directory / f"{stack}.ports").unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["release"]:
        if len(argv) != 2 or not re.fullmatch(r"[A-Za-z0-9_-]+", argv[1]):
            print("usage: free_ports.py release STACK", file=sys.stderr)
            return 64
        release(argv[1])
        return 0
    parser = argparse.ArgumentParser(prog="free_ports.py", description=__doc__.split("\n")[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--stack", help="reserve the ports for this stack (a file name)")
    parser.add_argument("--state", help="the stack's state directory")
    parser.add_argument("--pid", type=int, default=0, help="the run that holds the stack")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 64 if exc.code else 0
    if args.count < 1 or (
        args.stack is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", args.stack)
    ):
        parser.print_usage(sys.stderr)
        return 64
    try:
        ports = draw(args.count, args.stack, args.state, args.pid)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return exc.status
    print(" ".join(map(str, ports)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
