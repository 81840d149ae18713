"""Workflow steps run as GitHub's runner runs them (test_tools.run_step: `bash -eo pipefail`), with
the real `jq` and stand-ins for the cloud tools they call: small Python programs that
answer from a registry kept in a JSON file (no AWS or Sigstore can be reached from here).

Used by test_workflows_scan_gate, test_workflows_resign and test_workflows_build_once."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .conftest import tool
from .test_tools import run_step

DEV_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/comments-api/dev"
REPOSITORY = "comments-api/dev"
SHA = "c0ffee" * 6 + "c0ff"  # the commit the workflow runs for

# What each stand-in program starts with: the tool it stands in for (one program may
# stand in for several), its arguments, the registry ($REGISTRY) and an option's value.
PREAMBLE = r"""
import json, os, sys

tool, args = sys.argv[1], sys.argv[2:]
registry = json.load(open(os.environ["REGISTRY"]))


def opt(name):
    return args[args.index(name) + 1]

"""


@dataclass
class StepRun:
    code: int
    out: str  # stdout, then stderr
    calls: list[str]  # each stand-in call: its name and arguments
    registry: dict[str, Any]  # the registry after the step


def run_with_registry(
    step: dict[str, Any],
    tmp_path: Path,
    env: dict[str, str],
    registry: dict[str, Any],
    programs: dict[str, str],
) -> StepRun:
    """The step's run script with a stand-in for each tool of `programs` (the body of a
    Python program, after PREAMBLE) over `registry`."""
    tool("jq")
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = tmp_path / "registry.json"
    state.write_text(json.dumps(registry))
    stand_ins = {}
    for name, body in programs.items():
        program = tmp_path / f"fake_{name}.py"
        program.write_text(PREAMBLE + body)
        stand_ins[name] = f'exec {sys.executable} {program} {name} "$@"'
    proc = run_step(step, tmp_path, {**env, "REGISTRY": str(state)}, stand_ins)
    calls = (tmp_path / "calls.log").read_text().splitlines()
    return StepRun(proc.returncode, proc.stdout + proc.stderr, calls, json.loads(state.read_text()))


def step_of(job: dict[str, Any], *, run: str = "", uses: str = "") -> dict[str, Any]:
    """The one step of `job` whose run script holds `run`, or that uses the action `uses`."""
    (step,) = [
        s
        for s in job["steps"]
        if (run and run in s.get("run", "")) or (uses and s.get("uses", "").startswith(uses))
    ]
    return step
