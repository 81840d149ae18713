#!/usr/bin/env bash
# `make security` (and .ci/run): bandit on src/ (config in pyproject.toml, each skip
# justified there) and semgrep with the local rules in .semgrep/ only: no registry
# rules (none are reachable here), no metrics, no version check. semgrep pins many
# libraries, so it lives in its own venv under /opt, installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SEMGREP_VENV=${SEMGREP_VENV:-/opt/semgrep-venv}
SEMGREP_VERSION=${SEMGREP_VERSION:-1.185.0}

echo "== bandit"
.venv/bin/bandit -q -r src -c pyproject.toml
echo "bandit: clean"

echo "== semgrep (local rules: .semgrep/)"
if [ ! -x "$SEMGREP_VENV/bin/semgrep" ]; then
  python3 -m venv "$SEMGREP_VENV"
  "$SEMGREP_VENV/bin/pip" install --quiet --disable-pip-version-check "semgrep==$SEMGREP_VERSION" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
# The rules must still catch what they are written for: each has a bad example.
"$SEMGREP_VENV/bin/semgrep" --test --metrics=off --disable-version-check \
  --config .semgrep/comments-api.yaml .semgrep/comments-api.py
"$SEMGREP_VENV/bin/semgrep" scan --config .semgrep/comments-api.yaml --metrics=off \
  --disable-version-check --error --quiet src
echo "semgrep: clean"
