#!/usr/bin/env bash
# Installs the system programs the test suite runs for real (Debian 12).
# Idempotent: only missing packages are installed. Needs root (or sudo) and apt.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_bin() { have initdb || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }

pg_bin || need+=(postgresql)
have redis-server || need+=(redis-server)
have wrk || need+=(wrk)
have prometheus || need+=(prometheus)
have promtool || need+=(prometheus)
have amtool || need+=(prometheus-alertmanager)
have runuser || need+=(util-linux)
# The service behind a real pooler (tests/test_pgbouncer.py); Debian's is in /usr/sbin.
have pgbouncer || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
# A PostgreSQL path that goes silent (tests/test_pool_checkout.py drops its loopback port).
have iptables || need+=(iptables)
# The README's walkthrough, run as written (tests/test_serve_e2e.py): not on every Debian image.
have curl || need+=(curl)
# The workflow steps make k8s-check runs as the runner would (tests/deploy/workflow_steps.py).
have jq || need+=(jq)
# Browser tests (tests/browser): Debian's chromium, never a downloaded one; npm installs
# the pinned axe-core they inject.
[ -x /usr/bin/chromium ] || need+=(chromium)
have node || need+=(nodejs)
have npm || need+=(npm)

if [ "${#need[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# PostgreSQL refuses to run as root; the tests run it as this user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
