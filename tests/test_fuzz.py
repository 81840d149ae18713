"""Schemathesis against a live `comments-api serve`, driven by its own /openapi.json.

Both AUTH_MODE values, each without a credential, with an API key (made by the
`keys create` CLI) and with a reader JWT; SQLite and PostgreSQL alternate between the
scenarios. Every documented operation gets a bounded number of generated requests (valid
and invalid ones, plus Schemathesis' boundary "coverage" cases). A run passes only with
zero 5xx and zero responses that break the document: undocumented status codes, content
types or headers, or bodies that do not match their schema.

FUZZ_EXAMPLES (default 8) bounds the examples per operation; FUZZ_SEED fixes the seed
(default: random, printed, so a failure can be replayed).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET

import pytest

from .authkit import AUDIENCE, ISSUER, hs_signer
from .support import VENV_BIN, ServiceProcess

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "8")
# One worker: with two, Hypothesis' lambda-source cache (shared by the threads) raised
# spurious FlakyFailure "Runtime Error"s inside Schemathesis (4.32) during generation.
WORKERS = os.environ.get("FUZZ_WORKERS", "1")
PHASES = os.environ.get("FUZZ_PHASES", "examples,coverage,fuzzing")

# (AUTH_MODE, credential, database)
SCENARIOS = [
    ("open", None, "sqlite"),
    ("open", "api_key", "postgres"),
    ("open", "jwt", "sqlite"),
    ("required", None, "postgres"),
    ("required", "api_key", "sqlite"),
    ("required", "jwt", "postgres"),
]


def failures(junit_path: str) -> list[str]:
    """Every failure and error Schemathesis reported, one entry per distinct failure."""
    found = []
    # Our own report file, written by the Schemathesis run below.
    for case in ET.parse(junit_path).getroot().iter("testcase"):  # noqa: S314
        for problem in [*case.iter("failure"), *case.iter("error")]:
            text = problem.text or problem.get("message", "")
            # One <failure> lists every distinct failure of the operation, numbered.
            for part in re.split(r"\n(?=\d+\. Test Case ID)", text):
                found.append(f"{case.get('name')}: {part.strip()[:1500]}")
    return found


@pytest.mark.parametrize(("auth_mode", "credential", "database"), SCENARIOS)
def test_schemathesis_finds_no_5xx_and_no_contract_violation(
    auth_mode, credential, database, tmp_path, request
):
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'comments.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"fuzz_{uuid.uuid4().hex[:12]}")
    signer = hs_signer()
    env = {
        "DATABASE_URL": url,
        "AUTH_MODE": auth_mode,
        "RATELIMIT_ENABLED": "false",  # thousands of requests from one address
        "JWT_HS256_SECRET": signer.key,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
    }
    seed = os.environ.get("FUZZ_SEED") or str(random.randrange(2**31))
    with ServiceProcess(env, tmp_path) as service:
        headers = []
        if credential == "api_key":
            key = subprocess.run(
                [str(VENV_BIN / "comments-api"), "keys", "create", "--name", "fuzz",
                 "--scope", "admin"],
                env={**service.env}, capture_output=True, text=True, check=True, timeout=60,
            ).stdout.strip()  # fmt: skip
            headers = ["-H", f"Authorization: Bearer {key}"]
        elif credential == "jwt":
            headers = ["-H", f"Authorization: Bearer {signer.token(subject='fuzz-reader')}"]
        junit = str(tmp_path / "junit.xml")
        # Judge only what the fuzzing caused: start() polls /metrics while workers boot.
        log_start = len(service.log())
        run = subprocess.run(
            [
                str(VENV_BIN / "st"), "run", f"{service.base}/openapi.json",
                "--max-examples", EXAMPLES, "--seed", seed, "--checks", CHECKS,
                "--phases", PHASES, "--workers", WORKERS,
                "--request-timeout", "10", "--no-color", "--suppress-health-check", "all",
                "--report", "junit", "--report-junit-path", junit, *headers,
            ],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        log = service.log()[log_start:]
    summary = run.stdout[-3000:] + run.stderr[-2000:]
    assert os.path.exists(junit), f"schemathesis did not run (seed {seed}):\n{summary}"
    found = failures(junit)
    assert not found, f"seed {seed}:\n" + "\n\n".join(found)
    assert run.returncode == 0, summary
    # Nothing may have reached the catch-all handler, even where the fuzzer saw no 5xx.
    assert "unhandled error" not in log, log[-5000:]
    assert re.search(r"Test cases:\s*\n\s*\d+ generated", run.stdout), summary
