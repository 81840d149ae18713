#!/usr/bin/env bash
# `make image-test` (and .ci/run): on a machine with no registry access, build the real
# Dockerfile on local stand-in base images, offline, then check it the way an SRE would:
# hadolint, checkov, an SBOM, `docker-compose config`, and the container tests (run
# hardened: read-only root, no capabilities, non-root, memory/pids limits, loopback only).
#
# Installs docker.io / debootstrap / docker-compose from apt when missing. Starts a
# Docker engine itself when none answers (no bridge, no iptables) and stops that one,
# by PID, at the end. Outputs go to artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

ARTIFACTS=artifacts
DATA_ROOT=${DOCKER_DATA_ROOT:-/var/lib/comments-api-docker}
CHECKOV_VENV=${CHECKOV_VENV:-/opt/checkov-venv}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
export IMAGE=${IMAGE:-comments-api:dev}
export BUILD_BASE=${BUILD_BASE:-local/python-build:3.11-bookworm}
export RUNTIME_BASE=${RUNTIME_BASE:-local/python-distroless:3.11-nonroot}
export DOCKER_BUILD_NETWORK=none
mkdir -p "$ARTIFACTS"
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - start))"; }

step "tools"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v docker-compose >/dev/null || need+=(docker-compose)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# SC1091: checked on its own the library is not followed; `make lint` follows it.
# shellcheck source=scripts/lib/docker-engine.sh disable=SC1091
. scripts/lib/docker-engine.sh
trap docker_engine_stop EXIT

step "docker engine"
docker_engine_up "$DATA_ROOT" "$ARTIFACTS/dockerd.log" "$ARTIFACTS/dockerd.pid"

step "local stand-in base images"
scripts/build-local-bases.sh

step "build $IMAGE from the real Dockerfile (offline)"
scripts/image-build.sh 2> >(grep -v -e 'legacy builder is deprecated' -e 'buildx' -e 'docs.docker.com/go/buildx' -e '^ *$' >&2)

step "hadolint"
.venv/bin/hadolint Dockerfile
echo "hadolint: clean"

step "checkov (dockerfile, offline)"
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
"$CHECKOV_VENV/bin/checkov" --config-file .checkov.yaml --file Dockerfile

step "SBOM (syft, CycloneDX JSON)"
SYFT_CHECK_FOR_APP_UPDATE=false .venv/bin/syft scan "docker:$IMAGE" --quiet \
  -o "cyclonedx-json=$ARTIFACTS/sbom-comments-api.cdx.json"
.venv/bin/python - "$ARTIFACTS/sbom-comments-api.cdx.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
names = {c["name"].lower() for c in doc.get("components", [])}
missing = {"flask", "gunicorn", "sqlalchemy", "comments-api", "libc6", "python3.11-minimal"} - names
print(f"{sys.argv[1]}: {len(names)} components")
if missing:
    sys.exit(f"SBOM lacks {sorted(missing)}")
PY

step "docker-compose config"
# compose.yaml refuses to start without these (no default secrets); any value validates.
POSTGRES_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))') \
REDIS_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))') \
GRAFANA_ADMIN_PASSWORD=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))') \
  docker-compose -f compose.yaml config >"$ARTIFACTS/compose.resolved.yaml"
# `config` does not look at bind-mount sources: every deploy/ file it names must exist.
.venv/bin/python - "$ARTIFACTS/compose.resolved.yaml" <<'PY'
import sys, yaml
from pathlib import Path
services = yaml.safe_load(open(sys.argv[1]))["services"]
binds = [
    (name, v.split(":")[0] if isinstance(v, str) else v["source"])
    for name, svc in services.items() for v in svc.get("volumes", [])
]
binds = [(n, s) for n, s in binds if s.startswith(("/", "."))]
missing = [f"{n}: {s}" for n, s in binds if not Path(s).exists()]
assert all(svc.get("network_mode") == "host" for svc in services.values()), "host network only"
print(f"compose.yaml: valid, {len(services)} services, {len(binds)} bind mounts present")
if missing:
    sys.exit("missing bind-mount sources:\n" + "\n".join(missing))
PY

step "container tests"
rc=0
rm -f "$ARTIFACTS/container-budgets.json"
COMMENTS_API_IMAGE=$IMAGE .venv/bin/pytest -m docker tests/container/ -p no:cacheprovider || rc=$?
if [ -n "$DOCKER_ENGINE_PID" ]; then
  # Our own data root: drop superseded images from earlier runs, keep today's build cache.
  docker image prune --force --filter until=24h >/dev/null
fi
if [ -f "$ARTIFACTS/container-budgets.json" ]; then
  echo "measured budgets ($ARTIFACTS/container-budgets.json):"
  cat "$ARTIFACTS/container-budgets.json"
fi
step "done (exit $rc)"
exit "$rc"
