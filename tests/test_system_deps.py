"""scripts/install-system-deps.sh installs every program `make test` runs for real.

`make test` runs before `make image-test` and `make pipeline-test`, which install curl among
others: a program only they install is missing on a fresh machine when `make test` needs it
(tests/test_serve_e2e.py runs the README's walkthrough with curl), and with CI=true a missing
program fails its test. `make k8s-check` runs this script too, for jq among others (the
workflow steps in tests/deploy). The script runs here with stand-ins for every program it
looks for but one, and an apt-get that records what it was asked for (no root, no network).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-system-deps.sh"

pytestmark = pytest.mark.unit

# Program -> the Debian package the script installs when it is missing.
PROGRAMS = {
    "initdb": "postgresql",
    "redis-server": "redis-server",
    "wrk": "wrk",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "amtool": "prometheus-alertmanager",
    "runuser": "util-linux",
    "pgbouncer": "pgbouncer",
    "iptables": "iptables",
    "curl": "curl",
    "jq": "jq",
    "node": "nodejs",
    "npm": "npm",
}


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_a_missing_program_is_installed(tmp_path: Path, program: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    stand_ins = {name: "#!/bin/sh\nexit 0\n" for name in PROGRAMS if name != program}
    stand_ins["apt-get"] = f'#!/bin/sh\necho "$*" >>{log}\n'
    stand_ins["id"] = '#!/bin/sh\n[ "$1" = -u ] && echo 0\nexit 0\n'  # root, user postgres exists
    for name, text in stand_ins.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(bin_dir)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if program == "initdb" and list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return  # Debian's server binaries, off the PATH, count too (compgen on their path)
    if program == "pgbouncer" and Path("/usr/sbin/pgbouncer").exists():
        return  # Debian's, in /usr/sbin (off a user's PATH), counts too
    installs = [args for args in map(str.split, log.read_text().splitlines()) if "install" in args]
    assert len(installs) == 1, log.read_text()
    assert PROGRAMS[program] in installs[0], installs[0]
