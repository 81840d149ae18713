#!/usr/bin/env bash
# The delivery pipeline, run locally: tests -> lint and security scans -> build the image
# ONCE (tag = git SHA, digest recorded) -> push to the dev registry -> deploy to staging by
# digest -> readiness -> E2E + k6 load test -> promote the SAME digest to the prod registry
# (skopeo copy, no rebuild), sign it, verify the signature -> deploy to production -> smoke
# -> on failure roll back to the previous digest by itself and exit non-zero.
#
# Targets (docs/pipeline.md has the full story):
#   --target local     any Docker host (own dockerd when none answers), no cluster: two registries,
#                      staging and production = 3 hardened replicas each behind haproxy (active
#                      /readyz checks), one PostgreSQL, one Redis, all on 127.0.0.1. In .ci/run.
#   --target minikube  the Kustomize overlays in deploy/k8s/overlays/{staging,production},
#                      pinned by digest; kubectl rollout status / rollout undo. One run per
#                      cluster (ConfigMap comments-production/comments-api-deploy-lock). A
#                      commit whose image DEV_REGISTRY holds already (its own tag, a clean
#                      tree, no --image) is deployed by that digest, not built again.
#
# Usage: scripts/deploy.sh [--target local|minikube] [--dry-run] [--skip-tests] [--skip-scans]
#          [--image LOCAL_IMAGE] [--tag TAG] [--state-dir DIR] [--keep] [--down]
#          [--prod-smoke-hook CMD] [--ready-timeout S] [--load-duration D] [--load-vus N]
#        scripts/deploy.sh --render staging|production --digest sha256:...   (print the pinned
#          manifests the minikube target applies: kubectl kustomize, offline; --digest
#          goes with --render only)
#        scripts/deploy.sh --down --state-dir DIR   (tear down a --keep stack, and the dockerd
#          its run started, if it did; never an engine the run found running)
#   An option's value goes after a space or an = sign: --tag v1 or --tag=v1.
#   --prod-smoke-hook CMD runs with BASE_URL, DEPLOY_ENV, DEPLOY_DIGEST; CMD is never printed
#   (it may hold a token): the log says that it ran, how long it took, its exit status.
# Environment: READY_TIMEOUT, LOAD_DURATION, LOAD_VUS (defaults of the flags above;
#   --ready-timeout bounds the wait for /readyz: each local replica's, or the minikube
#   Service's through its port-forward; 60 s);
#   DOCKER_DATA_ROOT (local: data root of a dockerd started when none answers,
#   /var/lib/comments-api-docker); DEPLOY_PORT_RANGE, DEPLOY_PORTS_DIR (local: where the
#   stack's ports come from and are reserved, scripts/free_ports.py); KUBE_CONTEXT
#   (MINIKUBE_PROFILE, comments: the cluster of provision-k8s.sh), DEV_REGISTRY
#   (localhost:5000), PROD_REGISTRY (localhost:5001): the minikube target's cluster and
#   registries.
# Exit codes: 0 released; 1 stopped before production (production untouched; minikube:
#               staging, when this run changed it, rolled back and smoke-tested again;
#               local: the same after a failed rollout, E2E or load test; a staging that
#               does not answer then is named in the output, the exit stays 1);
#             2 production failed, was rolled back, and the release it went back to answers
#               its smoke test; 3 production failed, rollback failed too (or that release
#               does not answer, or it was impossible: nothing to go back to, a Deployment
#               not readable);
#             4 released, but an old replica (local target) could not be stopped or removed:
#               it is named, out of haproxy; remove it (1, 2 and 3 win over 4, and name it too);
#             64 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

TARGET=""
DRY_RUN=0
SKIP_TESTS=0
SKIP_SCANS=0
SOURCE_IMAGE=""
TAG=""
STATE=""
KEEP=0
DOWN=0
PROD_SMOKE_HOOK=""
RENDER=""
DIGEST=""
AUTO_STATE=0
READY_TIMEOUT=${READY_TIMEOUT:-60}
LOAD_DURATION=${LOAD_DURATION:-10s}
LOAD_VUS=${LOAD_VUS:-4}
REPLICAS=3
# Set by local_up (or read back from the state directory), named per environment.
# shellcheck disable=SC2034 # the PIDs are read through STACK_PIDS (${!v})
staging_LB="" production_LB="" staging_HAPROXY_PID="" production_HAPROXY_PID=""
# shellcheck disable=SC2034
STACK="" DEV_PORT="" PROD_PORT="" PG_PORT="" REDIS_PORT="" PG_DIR="" DEV_PID="" PROD_PID="" REDIS_PID=""
# The stack's own processes, and the start time of each (field 22 of /proc/PID/stat): a PID
# alone may name another process by the time a kept stack is reused or torn down.
STACK_PIDS=(DEV_PID PROD_PID REDIS_PID staging_HAPROXY_PID production_HAPROXY_PID)
for v in "${STACK_PIDS[@]}"; do printf -v "${v}_START" '%s' ""; done
for env in staging production; do
  for i in 1 2 3; do printf -v "${env}_PORT_${i}a" '%s' ""; printf -v "${env}_PORT_${i}b" '%s' ""; done
done
# haproxy checks every 500 ms and marks a server DOWN after 2 failures (~1 s): replicas keep
# serving for SHUTDOWN_DELAY=2 s after SIGTERM, so no request reaches a closed socket.
CHECK_INTER_MS=500
CHECK_FALL=2
SHUTDOWN_DELAY=2
LABEL=org.example.pipeline
# minikube target settings (override through the environment)
# The cluster scripts/provision-k8s.sh makes: its kubectl context is the minikube profile.
KUBE_CONTEXT=${KUBE_CONTEXT:-${MINIKUBE_PROFILE:-comments}}
DEV_REGISTRY=${DEV_REGISTRY:-localhost:5000}
PROD_REGISTRY=${PROD_REGISTRY:-localhost:5001}

# The comment block above, up to `set -euo pipefail`.
usage() { sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 64; }
# Options that take a value accept `--opt value` and `--opt=value`. INLINE: the argument
# being parsed came as `--opt=value` (split in two below).
INLINE=0
# value OPTION ARGS...: the option's value, or a usage error when it has none. `--opt
# --other` is a forgotten value; `--opt=--x` says outright that --x is the value.
value() {
  if [ $# -lt 2 ] || [ -z "$2" ] || { [ "$INLINE" = 0 ] && [ "${2#--}" != "$2" ]; }; then
    die "$1 needs a value (see --help)"
  fi
  printf '%s' "$2"
}
# flag OPTION: an option that takes no value was given one (`--keep=yes`).
flag() { [ "$INLINE" = 0 ] || die "$1 takes no value (see --help)"; }

while [ $# -gt 0 ]; do
  INLINE=0
  if [[ $1 == --*=* ]]; then
    # Only the name is ever echoed back: the value may be a --prod-smoke-hook's token.
    INLINE=1
    set -- "${1%%=*}" "${1#*=}" "${@:2}"
  fi
  case $1 in
    --target) TARGET=$(value "$@") || exit 64; shift 2 ;;
    --dry-run) flag "$1"; DRY_RUN=1; shift ;;
    --skip-tests) flag "$1"; SKIP_TESTS=1; shift ;;
    --skip-scans) flag "$1"; SKIP_SCANS=1; shift ;;
    --image) SOURCE_IMAGE=$(value "$@") || exit 64; shift 2 ;;
    --tag) TAG=$(value "$@") || exit 64; shift 2 ;;
    --state-dir) STATE=$(value "$@") || exit 64; shift 2 ;;
    --keep) flag "$1"; KEEP=1; shift ;;
    --down) flag "$1"; DOWN=1; shift ;;
    --prod-smoke-hook) PROD_SMOKE_HOOK=$(value "$@") || exit 64; shift 2 ;;
    --render) RENDER=$(value "$@") || exit 64; shift 2 ;;
    --digest) DIGEST=$(value "$@") || exit 64; shift 2 ;;
    --ready-timeout) READY_TIMEOUT=$(value "$@") || exit 64; shift 2 ;;
    --load-duration) LOAD_DURATION=$(value "$@") || exit 64; shift 2 ;;
    --load-vus) LOAD_VUS=$(value "$@") || exit 64; shift 2 ;;
    -h | --help) flag "$1"; usage; exit 0 ;;
    *) [ "$INLINE" = 0 ] || die "unknown option: $1 (given a value; see --help)"
      die "unknown argument: $1 (see --help)" ;;
  esac
done
if [ -z "$TARGET" ]; then
  # minikube is the default only where a cluster answers.
  if command -v kubectl >/dev/null && kubectl --context "$KUBE_CONTEXT" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    TARGET=minikube
  else
    TARGET=local
  fi
fi
case $TARGET in local | minikube) ;; *) die "--target must be local or minikube" ;; esac
# --digest names what --render pins. A release's digest is always the one its own build
# pushed: given to a run, --digest was ignored and the run built and released HEAD instead
# (another digest than the one asked for).
[ -z "$DIGEST" ] || [ -n "$RENDER" ] || die "--digest goes with --render only: a run releases the digest its build pushes"
# Checked before anything starts: a bad value found after the tests and the build would
# stop the pipeline half way, with registries and replicas to clean up.
[[ $READY_TIMEOUT =~ ^[1-9][0-9]{0,4}$ ]] || die "--ready-timeout (READY_TIMEOUT) must be whole seconds, 1-99999: '$READY_TIMEOUT'"
[[ $LOAD_VUS =~ ^[1-9][0-9]{0,3}$ ]] || die "--load-vus (LOAD_VUS) must be 1-9999: '$LOAD_VUS'"
[[ $LOAD_DURATION =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ && $LOAD_DURATION =~ [1-9] ]] ||
  die "--load-duration (LOAD_DURATION) must be a k6 duration such as 10s, 1m or 1m30s: '$LOAD_DURATION'"
# Docker's tag grammar: the release is named comments-api:TAG in both registries.
[ -z "$TAG" ] || [[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] ||
  die "--tag must be a Docker tag (letters, digits, _ . -; at most 128): '$TAG'"
# The local stack's haproxy serves its runtime API on STATE/ENV/haproxy.sock, and refuses a
# unix socket path longer than HAPROXY_SOCK_MAX: found by `haproxy -c` only once
# the registries, PostgreSQL and Redis were up, after the tests and the build. The path
# as the run makes it absolute (cd DIR && pwd: from the checkout, symlinks kept).
HAPROXY_SOCK_MAX=97
if [ "$TARGET" = local ] && [ "$DOWN" = 0 ] && [ -z "$RENDER" ] && [ -n "$STATE" ]; then
  case $STATE in /*) sock=$STATE ;; *) sock=$REPO/$STATE ;; esac
  sock=$(realpath -ms -- "$sock")/production/haproxy.sock
  # haproxy.cfg's `stats socket PATH` is split at blanks (haproxy refused it as an unknown
  # keyword, once the tests, the build, the registries and PostgreSQL had run).
  [[ $sock != *[[:space:]]* ]] ||
    die "--state-dir must not contain blanks: haproxy's configuration names its socket $sock unquoted: use another --state-dir"
  [ "${#sock}" -le "$HAPROXY_SOCK_MAX" ] ||
    die "--state-dir is too long: haproxy's socket $sock would have ${#sock} characters, haproxy takes at most $HAPROXY_SOCK_MAX (a unix socket path): use a shorter --state-dir"
fi

# --------------------------------------------------------------------------- output helpers
T0=$(date +%s)
STAGE_NO=0
stage() {
  STAGE_NO=$((STAGE_NO + 1))
  printf '\n==> [%s] %s  (t+%ss)\n' "$STAGE_NO" "$*" "$(($(date +%s) - T0))"
}
info() { printf '    %s\n' "$*"; }
# tinfo: the same with the seconds since the start, for steps worth timing.
tinfo() { printf '    [t+%ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() { printf '\n!!! %s\n' "$*" >&2; }
show() { printf '+ %s\n' "$(printf '%q ' "$@" | sed 's/ $//')"; }
# run CMD...: print it, then run it (unless --dry-run).
run() {
  show "$@"
  [ "$DRY_RUN" = 1 ] || "$@"
}
# runq CMD...: the same, with the command's own stdout silenced.
runq() {
  show "$@"
  [ "$DRY_RUN" = 1 ] || "$@" >/dev/null
}
# run_waited CMD...: the same as run, for a command that may take long (the test suite, the
# image build, a push or copy to a registry, E2E, k6, the smoke hook, `kubectl wait`,
# `rollout status`: minutes). bash
# runs a signal's trap only once the foreground command returns: a run stopped (Ctrl-C, a
# CI's SIGTERM) went on until it ended, holding the lock. In the background, the builtin
# `wait` returns at the signal, and the EXIT trap stops the command (stop_waited).
run_waited() {
  show "$@"
  [ "$DRY_RUN" = 0 ] || return 0
  waited "$@"
}
# runq_waited CMD...: the same as runq, for a command that may take long (docker push).
runq_waited() {
  show "$@"
  [ "$DRY_RUN" = 0 ] || return 0
  waited_to /dev/null "" "$@"
}
# waited CMD...: run CMD in the background and wait for it. In a process group of its own
# (setsid), so that stop_waited reaches every process it started (pytest's servers, k6, a
# hook's children), not its first one alone; with SIGINT's default action back, which a
# script's background job ignores, so that stop_waited's SIGINT works as Ctrl-C would.
WAITED_PID=""
waited() {
  env --default-signal=INT setsid --wait "$@" &
  waited_wait
}
# waited_to OUT ERR CMD...: the same, CMD's stdout into the file OUT and (ERR not empty) its
# stderr into ERR. On the background command alone: a redirection of the waited call
# itself stays in force in the EXIT trap that a signal runs there, and the run's last
# words ("PIPELINE STOPPED", the teardown) went into that file.
waited_to() {
  local out=$1 err=$2
  shift 2
  if [ -n "$err" ]; then
    { env --default-signal=INT setsid --wait "$@" & } >"$out" 2>"$err"
  else
    { env --default-signal=INT setsid --wait "$@" & } >"$out"
  fi
  waited_wait
}
# waited_wait: wait for the command just started in the background ($!).
waited_wait() {
  local rc=0
  WAITED_PID=$!
  wait "$WAITED_PID" || rc=$?
  WAITED_PID=""
  return "$rc"
}
# waited_tools: both targets' preflight. Every waited step needs `setsid --wait`
# (util-linux) and `env --default-signal` (GNU coreutils >= 8.31): without them (BusyBox,
# macOS, an older coreutils) the first step failed mid-run, after the lock was taken.
waited_tools() {
  local lacks=""
  setsid --wait true >/dev/null 2>&1 || lacks+=" setsid with --wait (util-linux);"
  env --default-signal=INT true >/dev/null 2>&1 || lacks+=" env with --default-signal (GNU coreutils 8.31 or later);"
  if [ -n "$lacks" ]; then
    fail "every waited step (tests, build, registry pushes and copies, waits, E2E, load test, smoke tests) runs under 'env --default-signal=INT setsid --wait'; this machine lacks:${lacks%;}: install them, nothing was changed"
    exit 1
  fi
}
# stop_waited: stop waited's command, if one runs (the EXIT trap): SIGINT to its group, as
# Ctrl-C would send it (pytest then tears its fixtures down: a SIGTERM left their PostgreSQL
# clusters running), up to 10 s for the whole group (its first process may exit before the
# others are done cleaning up), then SIGKILL to whatever of it is left.
STOP_GRACE_TENTHS=100
stop_waited() {
  local pid=$WAITED_PID i
  [ -n "$pid" ] || return 0
  WAITED_PID=""
  kill -INT -- "-$pid" 2>/dev/null || kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_GRACE_TENTHS; i++)); do
    group_running "$pid" || break
    sleep 0.1
  done
  # Not reaped yet, the command's PID (its group's id) cannot be reused meanwhile.
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# group_running PGID: a process of the group runs (zombies, exited but not reaped, do not).
group_running() {
  local stat line state pgrp
  for stat in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$stat" || continue
    # After the command name in parentheses: state, parent, process group.
    read -r state _ pgrp _ <<<"${line##*) }"
    [ "$pgrp" != "$1" ] || [ "$state" = Z ] || return 0
  done
  return 1
}
# hapctl ENV COMMAND: print and send one haproxy runtime API command.
hapctl() {
  printf '+ echo %q | socat stdio unix-connect:%q   # haproxy runtime API\n' "$2" "$STATE/$1/haproxy.sock"
  [ "$DRY_RUN" = 1 ] || hap "$1" "$2" >/dev/null
}
# capture VAR PLACEHOLDER CMD...: print CMD, run it and store its stdout in VAR; a dry run
# stores PLACEHOLDER instead so later commands print something readable. Returns CMD's
# status (inside printf's arguments a failure was lost: an empty digest went on).
capture() {
  local __var=$1 __placeholder=$2 __out
  shift 2
  show "$@"
  if [ "$DRY_RUN" = 1 ]; then
    printf -v "$__var" '%s' "$__placeholder"
  else
    __out=$("$@") || return $? # named: a bare return in a trap gives the status before it
    printf -v "$__var" '%s' "$__out"
  fi
}
# capture_waited VAR PLACEHOLDER CMD...: the same as capture, for a command that may take
# long (skopeo inspect of a registry that is slow to answer). Through a file, not `$(...)`:
# bash runs a signal's trap only once a command substitution has returned.
capture_waited() {
  local __var=$1 __placeholder=$2 __file __rc=0
  shift 2
  show "$@"
  if [ "$DRY_RUN" = 1 ]; then
    printf -v "$__var" '%s' "$__placeholder"
    return 0
  fi
  __file=$(mktemp "${STATE:-${TMPDIR:-/tmp}}/captured.XXXXXX")
  waited_to "$__file" "" "$@" || __rc=$?
  [ "$__rc" = 0 ] && printf -v "$__var" '%s' "$(cat "$__file")"
  rm -f "$__file"
  return "$__rc"
}
# redis_ping: Redis answers PONG to its password (given in the environment, not argv).
redis_ping() {
  [ "$(REDISCLI_AUTH=$(cat "$STATE/redis-password") redis-cli --no-auth-warning \
    -h 127.0.0.1 -p "$REDIS_PORT" ping)" = PONG ]
}
# wait_for WHAT TIMEOUT CMD...: retry CMD until it succeeds (printed once in a dry run).
wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  if [ "$DRY_RUN" = 1 ] && [ "$1" = hap_up ]; then
    printf '+ echo %q | socat stdio unix-connect:%q   # retried until %s is UP (op_state 2), up to %ss\n' \
      "show servers state app" "$STATE/$2/haproxy.sock" "$3" "$timeout"
    return 0
  fi
  if [ "$DRY_RUN" = 1 ]; then
    printf '+ %s   # retried until it succeeds, up to %ss: %s\n' "$(printf '%q ' "$@" | sed 's/ $//')" "$timeout" "$what"
    return 0
  fi
  deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# COMMIT_TAG=1: TAG is the commit's own (no --tag, a clean tree), so it names one tree; the
# minikube target then reuses the image a run already pushed under it (reuse_pushed).
COMMIT_TAG=0
if [ -n "$TAG" ]; then
  :
elif git rev-parse --git-dir >/dev/null 2>&1; then
  TAG=$(git rev-parse --short=12 HEAD)
  COMMIT_TAG=1
  # A build from uncommitted changes must not pass for the commit.
  [ -z "$(git status --porcelain --untracked-files=no)" ] || { TAG="$TAG-dirty"; COMMIT_TAG=0; }
else
  TAG=unversioned
fi
IMAGE=comments-api:$TAG
PY=$REPO/.venv/bin/python
[ -x "$PY" ] || PY=python3
# SC1091: checked on its own (`shellcheck scripts/deploy.sh`) the library is not followed;
# `make lint` passes it too, and follows it.
# shellcheck source=scripts/lib/docker-engine.sh disable=SC1091
. scripts/lib/docker-engine.sh
K6=$REPO/.venv/bin/k6

# ------------------------------------------------------------------ stages both targets share
stage_tests() {
  stage "tests"
  if [ "$SKIP_TESTS" = 1 ]; then info "skipped (--skip-tests)"; return; fi
  # The set-up first, in the foreground: apt-get is not to be stopped half way, and sudo's
  # password prompt needs the terminal (a background job in its own session has none).
  # The suite then only checks that set-up again.
  run make --no-print-directory venv system-deps
  run_waited make --no-print-directory test
}

stage_scans() {
  stage "lint and security scans"
  if [ "$SKIP_SCANS" = 1 ]; then info "skipped (--skip-scans)"; return; fi
  run_waited make --no-print-directory lint
  # Gate on high severity: today's medium/low findings are reviewed (B104: the healthcheck
  # maps a wildcard bind to loopback; B310: a fixed http:// URL; B101: asserts that narrow
  # types) and carry no `# nosec` yet. The full report is still printed.
  if [ "$DRY_RUN" = 0 ]; then
    .venv/bin/bandit --quiet --recursive src 2>/dev/null | grep -E '^>> Issue|Location:' | sed 's/^/    /' || true
  fi
  run .venv/bin/bandit --quiet --recursive src --severity-level high
  run .venv/bin/hadolint Dockerfile
}

stage_build() {
  stage "build the image once: $IMAGE"
  if [ -n "$SOURCE_IMAGE" ]; then
    info "using the already built $SOURCE_IMAGE (--image); no build"
    run docker tag "$SOURCE_IMAGE" "$IMAGE"
  elif [ "$TARGET" = local ]; then
    # No registry reachable here: the real Dockerfile on local Debian stand-in bases, offline.
    # In the foreground: stopped half way it could leave its cached base tarball cut short
    # (and apt-get half done); once cached, it returns at once.
    run scripts/build-local-bases.sh
    run_waited env IMAGE="$IMAGE" BUILD_BASE=local/python-build:3.11-bookworm \
      RUNTIME_BASE=local/python-distroless:3.11-nonroot DOCKER_BUILD_NETWORK=none scripts/image-build.sh
  else
    run_waited env IMAGE="$IMAGE" scripts/image-build.sh
  fi
  capture IMAGE_ID "sha256:<image-id>" docker image inspect --format '{{.Id}}' "$IMAGE"
  if [[ $DRY_RUN = 0 && ! $IMAGE_ID =~ ^sha256:[0-9a-f]{64}$ ]]; then
    fail "no image id for $IMAGE (docker image inspect, above): nothing is pushed"
    exit 1
  fi
  info "image id (config digest): $IMAGE_ID"
}

# push_dev REGISTRY: push the one build and record the registry's manifest digest.
push_dev() {
  local registry=$1
  stage "push to the dev registry $registry"
  # By its id, not its name: until the push, another build of the same commit (another run
  # on this host) may take the name comments-api:TAG, and this run would push that one.
  run docker tag "$IMAGE_ID" "$registry/comments-api:$TAG"
  runq_waited docker push --quiet "$registry/comments-api:$TAG"
  if ! capture_waited DIGEST "sha256:<digest-of-$TAG>" skopeo inspect --tls-verify=false --format '{{.Digest}}' \
    "docker://$registry/comments-api:$TAG" || [[ $DRY_RUN = 0 && ! $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]]; then
    fail "no manifest digest for $registry/comments-api:$TAG from the dev registry (skopeo inspect, above): nothing is deployed"
    return 1
  fi
  info "release $TAG = $registry/comments-api@$DIGEST"
  if [ "$DRY_RUN" = 0 ] && [ -n "$STATE" ]; then
    printf 'tag=%s\ndigest=%s\nimage_id=%s\n' "$TAG" "$DIGEST" "$IMAGE_ID" >"$STATE/release"
  fi
}

# reuse_pushed REGISTRY: take the image a run already pushed to REGISTRY for this commit,
# as dev.yml's build job does. Builds are not bit-reproducible: a second run for the commit
# built and pushed another digest under the same tag, so the tag moved off the digest an
# earlier run tested and promoted, and a re-run released an image never built before
# instead of redeploying the commit's. Only the commit's own tag (COMMIT_TAG) names one
# tree: --tag, a -dirty tree and --image always build (or take the image) and push.
# Returns 0 with DIGEST set (nothing to build or push), 1 when the tag is not there (build
# it); exits 1 when the registry cannot say (building over an unknown state would push a
# second image of the commit, if the tag is there).
reuse_pushed() {
  local registry=$1 found err
  [ "$COMMIT_TAG" = 1 ] && [ -z "$SOURCE_IMAGE" ] || return 1
  local ref="docker://$registry/comments-api:$TAG"
  stage "this commit's image in the dev registry? $registry/comments-api:$TAG"
  show skopeo inspect --tls-verify=false --format '{{.Digest}}' "$ref"
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: a digest found is deployed and promoted as it is, without a build; none: built and pushed, below)"
    return 1
  fi
  # Waited (through files): a registry slow to answer must not hold an interrupt back.
  if waited_to "$STATE/lookup.out" "$STATE/lookup.err" skopeo inspect --tls-verify=false --format '{{.Digest}}' "$ref"; then
    found=$(cat "$STATE/lookup.out")
    if ! [[ $found =~ ^sha256:[0-9a-f]{64}$ ]]; then
      fail "$registry/comments-api:$TAG did not resolve to a sha256 digest: '$found'"
      exit 1
    fi
    DIGEST=$found
    info "pushed already by an earlier run: release $TAG = $registry/comments-api@$DIGEST (not built again; to build anew, give another --tag)"
    return 0
  fi
  err=$(cat "$STATE/lookup.err")
  # The registry answered that there is no such tag (or no such repository yet).
  if [[ $err == *"manifest unknown"* || $err == *"name unknown"* ]]; then
    info "not pushed yet: building it"
    return 1
  fi
  printf '%s\n' "$err" >&2
  fail "cannot tell whether $registry/comments-api:$TAG exists (skopeo inspect, above): nothing is built or deployed"
  exit 1
}

# promote DEV PROD: copy the same manifest (no rebuild) and sign it with a key made for this
# run, then verify the signature with the public key alone before production may use it.
promote() {
  local dev=$1 prod=$2 copied
  stage "promote $DIGEST: $dev -> $prod (skopeo copy, signed, no rebuild)"
  signing_key || return 1
  # The lookaside store may already hold signatures of this digest (promoted before under
  # another tag): this copy adds signature-N+1, and that one is verified below, not
  # signature-1, whose identity is the other tag.
  local sigdir="$STATE/sigstore/comments-api@${DIGEST/:/=}" n=0
  if [ "$DRY_RUN" = 0 ]; then
    while [ -e "$sigdir/signature-$((n + 1))" ] && [ "$n" -lt 1000 ]; do n=$((n + 1)); done
  fi
  run_waited env GNUPGHOME="$STATE/gnupg" skopeo --registries.d "$STATE/registries.d" copy --quiet \
    --preserve-digests --src-tls-verify=false --dest-tls-verify=false --sign-by "$FPR" \
    "docker://$dev/comments-api@$DIGEST" "docker://$prod/comments-api:$TAG" || return 1
  capture_waited copied "$DIGEST" skopeo inspect --tls-verify=false --format '{{.Digest}}' \
    "docker://$prod/comments-api:$TAG" || return 1
  if [ "$copied" != "$DIGEST" ]; then
    fail "the prod registry holds $copied, not $DIGEST"
    return 1
  fi
  info "prod registry: $prod/comments-api:$TAG = $copied (same digest)"

  stage "verify the signature of $DIGEST before production"
  local manifest="$STATE/verify/manifest.json" sig
  sig="$sigdir/signature-$((n + 1))"
  run mkdir -p "$STATE/verify"
  show skopeo inspect --raw --tls-verify=false "docker://$prod/comments-api@$DIGEST" ">$manifest"
  [ "$DRY_RUN" = 1 ] || waited_to "$manifest" "" skopeo inspect --raw --tls-verify=false "docker://$prod/comments-api@$DIGEST" || return 1
  # The verifying keyring holds the public key only.
  run env GNUPGHOME="$STATE/gnupg-verify" skopeo standalone-verify "$manifest" \
    "$prod/comments-api:$TAG" "$FPR" "$sig"
}

signing_key() {
  FPR="<fingerprint>"
  run mkdir -p "$STATE/gnupg" "$STATE/gnupg-verify" "$STATE/registries.d" "$STATE/sigstore"
  [ "$DRY_RUN" = 1 ] || chmod 700 "$STATE/gnupg" "$STATE/gnupg-verify"
  # Signatures go to a lookaside store (GPG "simple signing"; docker-registry has no
  # signature API).
  show write "$STATE/registries.d/default.yaml" "(default-docker: sigstore-staging: file://$STATE/sigstore)"
  [ "$DRY_RUN" = 1 ] || printf 'default-docker:\n  sigstore: file://%s/sigstore\n  sigstore-staging: file://%s/sigstore\n' \
    "$STATE" "$STATE" >"$STATE/registries.d/default.yaml"
  if [ "$DRY_RUN" = 0 ] && [ -s "$STATE/signing-fingerprint" ]; then
    FPR=$(cat "$STATE/signing-fingerprint")
    return
  fi
  # A key generated at run time: nothing secret lives in the repository.
  run env GNUPGHOME="$STATE/gnupg" gpg --batch --quiet --passphrase '' --quick-gen-key \
    "comments-api pipeline <pipeline@localhost>" ed25519 sign 1d
  capture FPR "<fingerprint>" sh -c "GNUPGHOME='$STATE/gnupg' gpg --batch --with-colons --list-secret-keys 2>/dev/null | awk -F: '/^fpr/ { print \$10; exit }'"
  [ -n "$FPR" ] || { fail "no signing key in $STATE/gnupg (gpg --quick-gen-key, above)"; return 1; }
  show "GNUPGHOME=$STATE/gnupg gpg --export $FPR | GNUPGHOME=$STATE/gnupg-verify gpg --import"
  if [ "$DRY_RUN" = 0 ]; then
    GNUPGHOME="$STATE/gnupg" gpg --batch --export "$FPR" | GNUPGHOME="$STATE/gnupg-verify" gpg --batch --quiet --import
    printf '%s\n' "$FPR" >"$STATE/signing-fingerprint"
  fi
  info "signing key $FPR (generated for this run)"
}

e2e_and_load() {
  local base=$1
  stage "E2E on staging: the README walkthrough and v1 checks ($base)"
  run_waited "$PY" scripts/pipeline_e2e.py e2e "$base" || return 1
  stage "load test on staging: k6, $LOAD_VUS VUs for $LOAD_DURATION, thresholds must pass"
  run_waited "$K6" run --no-usage-report --quiet -e "BASE_URL=$base" -e "VUS=$LOAD_VUS" \
    -e "DURATION=$LOAD_DURATION" -e "MAX_FAILED_RATE=0.01" -e "P95_MS=800" scripts/k6/pipeline-load.js || return 1
}

smoke() {
  local env=$1 base=$2
  run_waited "$PY" scripts/pipeline_e2e.py smoke "$base" || return 1
  if [ "$env" = production ] && [ -n "$PROD_SMOKE_HOOK" ]; then
    # Checks only production can run (e.g. a canary journey); it sees what is deployed.
    smoke_hook "$env" "$base" || return 1
  fi
}

# smoke_hook ENV BASE: run --prod-smoke-hook. Its command is never printed, not even in a
# dry run: it may carry a token or a password (curl -H "Authorization: Bearer ..."), and
# this log is CI output. What an SRE gets instead: that the hook ran, the variables it was
# given (none secret), how long it took and its exit status (a signal named). The hook's
# own output is its own: it is shown as it comes.
smoke_hook() {
  local env=$1 base=$2 started rc=0 took why=""
  printf '+ env BASE_URL=%q DEPLOY_ENV=%q DEPLOY_DIGEST=%q bash -c %s\n' "$base" "$env" "$DIGEST" \
    "'<the --prod-smoke-hook command: not shown, it may hold credentials>'"
  [ "$DRY_RUN" = 0 ] || return 0
  started=$(date +%s)
  waited env BASE_URL="$base" DEPLOY_ENV="$env" DEPLOY_DIGEST="$DIGEST" bash -c "$PROD_SMOKE_HOOK" || rc=$?
  took=$(($(date +%s) - started))
  if [ "$rc" = 0 ]; then
    tinfo "production smoke hook passed: exit 0 after ${took}s"
    return 0
  fi
  [ "$rc" -le 128 ] || why=" (killed by SIG$(kill -l "$((rc - 128))" 2>/dev/null || echo "nal $((rc - 128))"))"
  fail "production smoke hook failed: exit $rc$why after ${took}s"
  return 1
}

# ============================================================================ target: local
# shellcheck disable=SC2054 # the commas belong to --tmpfs options
hardened=(
  --network host --read-only --tmpfs /tmp:rw,nosuid,nodev,size=64m
  --tmpfs /data:rw,nosuid,nodev,size=16m,uid=65532,gid=65532,mode=0700
  --cap-drop ALL --security-opt no-new-privileges --user 65532:65532
  --memory 256m --pids-limit 128
)

pg_binary() { command -v "$1" || printf '%s\n' /usr/lib/postgresql/*/bin/"$1" | sort -V | tail -n 1; }
# free_ports N [--stack NAME --state DIR --pid PID]: N distinct free ports on 127.0.0.1,
# outside the kernel's ephemeral range and none another local stack on this machine has
# reserved; with --stack, reserved for this one until --down (scripts/free_ports.py).
free_ports() { python3 scripts/free_ports.py "$@"; }

# hap ENV COMMAND: haproxy's runtime API on the environment's unix socket.
hap() {
  python3 - "$STATE/$1/haproxy.sock" "$2" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
sys.stdout.write(out.decode())
PY
}

# hap_state ENV SERVER: haproxy's operational state of one server (2 = UP, 0 = DOWN).
# shellcheck disable=SC2329 # called through wait_for
hap_state() { hap "$1" "show servers state app" | awk -v s="$2" '$4 == s { print $6 }'; }
# shellcheck disable=SC2329 # called through wait_for
hap_up() { [ "$(hap_state "$1" "$2")" = 2 ]; }

save_state() {
  # Local loop variables: callers (haproxy_up) have their own $env.
  local env i c v
  {
    printf 'STACK=%s\n' "$STACK"
    for v in DEV_PORT PROD_PORT PG_PORT REDIS_PORT PG_DIR DEV_PID PROD_PID REDIS_PID \
      staging_LB staging_HAPROXY_PID production_LB production_HAPROXY_PID \
      DEV_PID_START PROD_PID_START REDIS_PID_START staging_HAPROXY_PID_START production_HAPROXY_PID_START; do
      printf '%s=%s\n' "$v" "${!v}"
    done
    for env in staging production; do
      for i in $(seq 1 "$REPLICAS"); do
        for c in a b; do
          v=${env}_PORT_$i$c
          printf '%s=%s\n' "$v" "${!v}"
        done
      done
    done
  } >"$STATE/stack.env"
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# started PIDVAR: record the start time of the process just started into PIDVAR ($!).
started() { printf -v "$1" '%s' "$!"; printf -v "${1}_START" '%s' "$(proc_start "$!")"; }
# ours PIDVAR: the process PIDVAR names is still the one the stack started: alive, with the
# recorded start time (a record written before start times were kept: with the command
# that variable's process runs). Otherwise the PID was reused (a reboot, the process died
# and another took its number): never ours to kill, nor a sign that the stack runs.
ours() {
  local pid=${!1:-} start_var=${1}_START comm
  alive "$pid" || return 1
  if [ -n "${!start_var:-}" ]; then
    [ "$(proc_start "$pid")" = "${!start_var}" ]
    # Its status named: a bare `return` in the EXIT trap (finish -> local_down) returns the
    # status from before the trap, so a failed run's teardown took every process of its
    # stack for another's and left them all running.
    return $?
  fi
  case $1 in REDIS_PID) comm=redis-server ;; DEV_PID | PROD_PID) comm=docker-registry ;; *) comm=haproxy ;; esac
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

local_up() {
  stage "local environments (registries, PostgreSQL, Redis, haproxy) in ${STATE:-<state-dir>}"
  if [ "$DRY_RUN" = 0 ] && [ -s "$STATE/stack.env" ]; then
    # shellcheck disable=SC1091
    . "$STATE/stack.env"
    for v in "${STACK_PIDS[@]}"; do
      ours "$v" || { fail "the stack in $STATE lost process ${!v:-?} ($v): run deploy.sh --down --state-dir $STATE"; exit 1; }
    done
    info "reusing the running stack $STACK"
    return
  fi
  local_tools
  if [ "$DRY_RUN" = 1 ]; then
    STACK=dryrun DEV_PORT=5001 PROD_PORT=5002 PG_PORT=5433 REDIS_PORT=6380 PG_DIR=$STATE/pg
    staging_LB=8081 production_LB=8082
    local n=9000
    for env in staging production; do
      for i in $(seq 1 "$REPLICAS"); do
        for c in a b; do n=$((n + 1)); printf -v "${env}_PORT_$i$c" '%s' "$n"; done
      done
    done
    info "(dry run: ports are examples; a real run picks free ones)"
  else
    # The containers' label and name prefix, and what --down removes: unique per state
    # directory (two kept stacks in .../run1/state and .../run2/state were both "state",
    # and tearing one down removed the other's replicas).
    STACK=$(basename "$STATE" | tr -cd 'a-zA-Z0-9' | tail -c 8)$(printf '%s' "$STATE" | sha256sum | cut -c1-8)
    local ports drawn
    drawn=$(free_ports $((6 + 4 * REPLICAS)) --stack "$STACK" --state "$STATE" --pid "$$") || {
      fail "no ports for the local stack (above)"
      exit 1
    }
    read -r -a ports <<<"$drawn"
    DEV_PORT=${ports[0]} PROD_PORT=${ports[1]} PG_PORT=${ports[2]} REDIS_PORT=${ports[3]}
    # shellcheck disable=SC2034 # read through ${env}_LB
    staging_LB=${ports[4]} production_LB=${ports[5]}
    local n=6
    for env in staging production; do
      for i in $(seq 1 "$REPLICAS"); do
        for c in a b; do printf -v "${env}_PORT_$i$c" '%s' "${ports[n]}"; n=$((n + 1)); done
      done
    done
  fi
  # Written now and after every start: a failure half-way still tears down what runs.
  [ "$DRY_RUN" = 1 ] || save_state

  local REGISTRY_VARS=() var
  for var in $(compgen -e); do [[ $var != REGISTRY_* ]] || REGISTRY_VARS+=(-u "$var"); done
  for reg in dev prod; do
    local port_var=${reg^^}_PORT
    run mkdir -p "$STATE/registry-$reg/data"
    show write "$STATE/registry-$reg/config.yml" "(filesystem root $STATE/registry-$reg/data, http 127.0.0.1:${!port_var})"
    if [ "$DRY_RUN" = 0 ]; then
      cat >"$STATE/registry-$reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry-$reg/data
http:
  addr: 127.0.0.1:${!port_var}
EOF
    fi
    show docker-registry serve "$STATE/registry-$reg/config.yml" "&"
    if [ "$DRY_RUN" = 0 ]; then
      # docker-registry reads every REGISTRY_* variable as an override of its config.yml:
      # a CI job's REGISTRY_PASSWORD or skopeo's REGISTRY_AUTH_FILE would reconfigure (or
      # stop) the pipeline's own registries. They start from the config file alone.
      env "${REGISTRY_VARS[@]}" docker-registry serve "$STATE/registry-$reg/config.yml" >"$STATE/registry-$reg/log" 2>&1 &
      started "${reg^^}_PID"
      save_state
    fi
    wait_for "the $reg registry" 20 curl -fsS "http://127.0.0.1:${!port_var}/v2/"
  done

  # PostgreSQL refuses to run as root: its own directory, owned by the postgres user.
  local pg_bin
  pg_bin=$(dirname "$(pg_binary initdb)")
  local as_pg=()
  [ "$(id -u)" != 0 ] || as_pg=(runuser -u postgres --)
  if [ "$DRY_RUN" = 0 ]; then
    PG_DIR=$(mktemp -d /tmp/comments-pipeline-pg.XXXXXX)
    save_state
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$PG_DIR"
    # Passwords made for this run (PostgreSQL's and Redis's), handed to the apps as *_FILE
    # secrets. Redis reads its own from a config file: a command line is public to every
    # local user.
    umask 077
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$STATE/pg-password"
    python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$STATE/redis-password"
    printf 'requirepass %s\n' "$(cat "$STATE/redis-password")" >"$STATE/redis.conf"
    umask 022
    cp "$STATE/pg-password" "$PG_DIR/pwfile"
    [ "$(id -u)" != 0 ] || chown postgres "$PG_DIR/pwfile"
  fi
  runq "${as_pg[@]}" "$pg_bin/initdb" -D "$PG_DIR/data" -U postgres -A scram-sha-256 \
    --pwfile "$PG_DIR/pwfile" -E UTF8 --no-sync
  runq "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c max_connections=200" start
  for env in staging production; do
    show "$PY" -c "psycopg.connect(host=127.0.0.1, port=$PG_PORT, user=postgres, password=<generated>).execute('CREATE DATABASE comments_$env')"
    [ "$DRY_RUN" = 1 ] || PGPASSWORD=$(cat "$STATE/pg-password") "$PY" -c '
import os, sys, psycopg
with psycopg.connect(host="127.0.0.1", port=sys.argv[1], user="postgres", dbname="postgres",
                     password=os.environ["PGPASSWORD"], autocommit=True) as conn:
    conn.execute(f"CREATE DATABASE comments_{sys.argv[2]}")
' "$PG_PORT" "$env"
    if [ "$DRY_RUN" = 0 ]; then
      mkdir -p "$STATE/$env/secrets"
      printf 'postgresql+psycopg://postgres:%s@127.0.0.1:%s/comments_%s' \
        "$(cat "$STATE/pg-password")" "$PG_PORT" "$env" >"$STATE/$env/secrets/database-url"
      # Rate limits: Redis database 0 for staging, 1 for production.
      printf 'redis://:%s@127.0.0.1:%s/%s' "$(cat "$STATE/redis-password")" "$REDIS_PORT" \
        "$([ "$env" = staging ] && echo 0 || echo 1)" >"$STATE/$env/secrets/ratelimit-url"
      chmod 755 "$STATE/$env" && chmod 700 "$STATE/$env/secrets"
      # Only the image's runtime user (65532) may read the secrets.
      chown -R 65532:65532 "$STATE/$env/secrets"
      chmod 400 "$STATE/$env/secrets/database-url" "$STATE/$env/secrets/ratelimit-url"
    fi
  done

  show redis-server "$STATE/redis.conf" --bind 127.0.0.1 --port "$REDIS_PORT" --save "''" \
    --appendonly no "&"
  if [ "$DRY_RUN" = 0 ]; then
    redis-server "$STATE/redis.conf" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
      --appendonly no >"$STATE/redis.log" 2>&1 &
    started REDIS_PID
    save_state
  fi
  wait_for redis 10 redis_ping

  for env in staging production; do haproxy_up "$env"; done
  [ "$DRY_RUN" = 1 ] || save_state
}

haproxy_up() {
  local env=$1 lb_var=${1}_LB cfg="$STATE/$1/haproxy.cfg" checked reason
  run mkdir -p "$STATE/$env"
  show write "$cfg" "(frontend 127.0.0.1:${!lb_var}; servers r1a..r${REPLICAS}b, option httpchk GET /readyz, inter ${CHECK_INTER_MS}ms fall $CHECK_FALL)"
  if [ "$DRY_RUN" = 0 ]; then
    {
      cat <<EOF
global
  stats socket $STATE/$env/haproxy.sock mode 600 level admin
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s
  # A connection refused or cut by a replica that is going away is retried on another one.
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter ${CHECK_INTER_MS}ms fall $CHECK_FALL rise 2
frontend $env
  bind 127.0.0.1:${!lb_var}
  default_backend app
backend app
  balance roundrobin
  option forwardfor
EOF
      # Two slots per replica (a/b): a new version starts beside the old one, then the old
      # one goes. Empty slots are in maintenance, not probed.
      for i in $(seq 1 "$REPLICAS"); do
        for c in a b; do
          local pv=${env}_PORT_$i$c
          printf '  server r%s%s 127.0.0.1:%s disabled\n' "$i" "$c" "${!pv}"
        done
      done
    } >"$cfg"
  fi
  # Its output kept for a failure only: under -q, a refused configuration (a stats socket
  # path too long, say) failed without a word.
  show haproxy -c -f "$cfg"
  if [ "$DRY_RUN" = 0 ] && ! checked=$(haproxy -c -f "$cfg" 2>&1); then
    # The first alert is the reason (the last ones only say that errors were found).
    reason=$(printf '%s\n' "$checked" | sed -n 's/^\[ALERT\] *([0-9]*) : //p' | sed -n 1p)
    fail "haproxy refuses $cfg: ${reason:-see its output below}"
    printf '%s\n' "$checked" | sed -e '/^\[NOTICE\]/d' -e '/^$/d' -e 's/^/    /' >&2
    return 1
  fi
  show haproxy -db -f "$cfg" "&"
  if [ "$DRY_RUN" = 0 ]; then
    haproxy -db -f "$cfg" >"$STATE/$env/haproxy.log" 2>&1 &
    started "${env}_HAPROXY_PID"
    save_state
  fi
  wait_for "haproxy ($env)" 10 test -S "$STATE/$env/haproxy.sock"
}

# local_tools: the local target's tools, installed from Debian packages when missing (as
# root, with apt-get); otherwise, or if that did not provide them, a clear message and exit 1.
missing_tools() {
  local need=()
  { command -v docker && command -v dockerd; } >/dev/null || need+=(docker.io)
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v gpg >/dev/null || need+=(gpg gpg-agent)
  command -v curl >/dev/null || need+=(curl)
  command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
  [ "${#need[@]}" = 0 ] || printf '%s\n' "${need[@]}"
}
local_tools() {
  local need=()
  mapfile -t need < <(missing_tools)
  [ "${#need[@]}" -gt 0 ] || return 0
  if [ "$DRY_RUN" = 0 ] && { [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; }; then
    fail "missing tools; install these packages (Debian: apt-get install ${need[*]}), or use --target minikube"
    exit 1
  fi
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ "$DRY_RUN" = 1 ] || mapfile -t need < <(missing_tools)
  if [ "$DRY_RUN" = 0 ] && [ "${#need[@]}" -gt 0 ]; then
    fail "still missing after apt-get install: ${need[*]} (not on the PATH?)"
    exit 1
  fi
}

# container args for one replica of ENV on PORT running REF
replica_args() {
  local env=$1 port=$2 ref=$3
  printf '%s\n' run --detach --name "comments-$STACK-$env-$port" \
    --label "$LABEL.stack=$STACK" --label "$LABEL.env=$env" "${hardened[@]}" \
    --volume "$STATE/$env/secrets/database-url:/run/secrets/database-url:ro" \
    --volume "$STATE/$env/secrets/ratelimit-url:/run/secrets/ratelimit-url:ro" \
    --env-file "$REPO/deploy/pipeline/$env.env" \
    --env HOST=127.0.0.1 --env "PORT=$port" --env MIGRATE_ON_START=false \
    --env "SHUTDOWN_DELAY=$SHUTDOWN_DELAY" \
    --env DATABASE_URL_FILE=/run/secrets/database-url \
    --env RATELIMIT_STORAGE_URL= --env RATELIMIT_STORAGE_URL_FILE=/run/secrets/ratelimit-url \
    "$ref"
}

# slot ENV I -> "COLOR CONTAINER DIGEST" of what runs there (empty when nothing does)
slot_get() { cat "$STATE/$1/slot$2" 2>/dev/null || true; }

# rollout ENV REGISTRY DIGEST [--no-migrate]: replace the replicas one at a time, each new one
# gated on its own /readyz and on haproxy seeing it UP before the old one is stopped. Like a
# terminating pod, an old replica drains in the background while the next new one starts
# (at least 3 serve at any time); all of them are gone before rollout returns.
#
# An old replica that could not be retired (docker stop or docker rm failed and the
# container is still there) does not fail the rollout: the new replicas serve, and rolling
# back would not remove it either. retire() warns with its name at once, it goes to
# LEFTOVER, the summary lists it again, and a run that released anyway exits 4 instead of 0.
# The next rollout into its slot removes it first (rollout_steps).
RETIRING=() RETIRING_WHAT=() LEFTOVER=()
rollout() {
  RETIRING=() RETIRING_WHAT=()
  local rc=0 j
  rollout_steps "$@" || rc=$?
  # One at a time: `wait PID...` returns the status of the last PID only.
  for j in "${!RETIRING[@]}"; do
    wait "${RETIRING[j]}" || LEFTOVER+=("${RETIRING_WHAT[j]}")
  done
  RETIRING=() RETIRING_WHAT=()
  return "$rc"
}

warn() { printf '\n!!! WARNING: %s\n' "$*" >&2; }

# container_state NAME: Docker's state of a container (running, exited, dead...), "gone"
# when there is no such container, "unknown" when Docker does not say. (`docker ps` can
# still list a container as running after its exit was lost: inspect is the truth.)
container_state() {
  local out
  if out=$(docker container inspect -f '{{.State.Status}}' "$1" 2>&1); then
    printf '%s' "$out"
  elif [[ $out == *"No such container"* ]]; then
    printf gone
  else
    printf unknown
  fi
}

# retire ENV I COLOR NAME DIGEST: stop one old replica, take its slot out of haproxy, remove
# it. Returns 1, after a warning naming the container, when it is still there.
retire() {
  local env=$1 i=$2 color=$3 name=$4 digest=$5 stop_rc=0 rm_rc=0 hap_rc=0 state
  # SIGTERM: /readyz turns 503, haproxy marks it DOWN within ~1 s while it still serves
  # (SHUTDOWN_DELAY), then gunicorn drains what is in flight.
  runq docker stop --time 30 "$name" || stop_rc=$?
  # Out of haproxy even when the stop failed: no new request for the old release.
  hapctl "$env" "set server app/r$i$color state maint" || hap_rc=$?
  runq docker rm "$name" || rm_rc=$?
  [ "$hap_rc" = 0 ] || warn "$env: haproxy did not take slot r$i$color ($name) out (runtime API failed, exit $hap_rc)"
  if [ "$DRY_RUN" = 1 ] || { [ "$stop_rc" = 0 ] && [ "$rm_rc" = 0 ]; }; then
    tinfo "$env replica $i: old $name stopped and removed"
    return 0
  fi
  state=$(container_state "$name")
  if [ "$state" = gone ]; then
    warn "$env replica $i: docker stop (exit $stop_rc) / rm (exit $rm_rc) of the old $name failed, but it is gone"
    return 0
  fi
  warn "$env replica $i: the old replica $name ($digest) could not be retired: docker stop exit $stop_rc, docker rm exit $rm_rc; it is still there (state: $state), $([ "$hap_rc" = 0 ] && echo "out of haproxy (slot r$i$color in maintenance)" || echo "and haproxy may still send it requests (slot r$i$color)"). Remove it: docker rm --force $name (the next rollout into slot r$i$color tries that first)"
  return 1
}

rollout_steps() {
  local env=$1 registry=$2 digest=$3 migrate=${4:-}
  local ref="$registry/comments-api@$digest"
  runq docker pull --quiet "$ref" || return 1
  if [ "$migrate" != --no-migrate ]; then
    info "migrations: a one-off container runs 'comments-api migrate' before any new replica"
    run timeout 120 docker run --rm --name "comments-$STACK-$env-migrate" --label "$LABEL.stack=$STACK" \
      "${hardened[@]}" --volume "$STATE/$env/secrets/database-url:/run/secrets/database-url:ro" \
      --env DATABASE_URL_FILE=/run/secrets/database-url --entrypoint /venv/bin/comments-api "$ref" migrate ||
      { fail "$env: migration failed"; return 1; }
  fi
  local i
  for i in $(seq 1 "$REPLICAS"); do
    local cur old_color="" old_name="" old_digest="" new_color=a
    cur=$(slot_get "$env" "$i")
    [ -z "$cur" ] || read -r old_color old_name old_digest <<<"$cur"
    if [ "$old_digest" = "$digest" ] && [ "$DRY_RUN" = 0 ] &&
      [ "$(docker inspect -f '{{.State.Running}}' "$old_name" 2>/dev/null)" = true ]; then
      info "$env replica $i already runs $digest"
      continue
    fi
    [ "$old_color" != a ] || new_color=b
    local port_var=${env}_PORT_$i$new_color
    local port=${!port_var} name="comments-$STACK-$env-${!port_var}"
    # An old replica a retire() could not remove (it warned) still holds this slot's name,
    # and its port if it runs: finish its retirement now. Left there, the slot was lost to
    # every later rollout, a rollback included ("Conflict. The container name ...").
    if [ "$DRY_RUN" = 0 ] && [ "$(container_state "$name")" != gone ]; then
      warn "$env replica $i: slot r$i$new_color still holds $name, an old replica not retired earlier: removing it"
      hapctl "$env" "set server app/r$i$new_color state maint" || true
      if ! runq docker rm --force "$name"; then
        fail "$env replica $i: slot r$i$new_color is not free: $name is still there (docker rm --force failed)"
        return 1
      fi
    fi
    tinfo "$env replica $i: start $digest on 127.0.0.1:$port (slot r$i$new_color)"
    local args=()
    mapfile -t args < <(replica_args "$env" "$port" "$ref")
    runq docker "${args[@]}" || return 1
    if ! wait_ready "$name" "$port"; then
      fail "$env replica $i never became ready with $digest"
      [ "$DRY_RUN" = 1 ] || docker logs --tail 20 "$name" 2>&1 | sed 's/^/    | /' >&2
      runq docker rm --force "$name"
      return 1
    fi
    tinfo "$env replica $i: ready on its own port; into haproxy"
    hapctl "$env" "set server app/r$i$new_color state ready"
    # Leaving maintenance marks a server UP at once; it must then pass haproxy's own checks.
    if ! { wait_for "haproxy to see $env r$i$new_color UP" 20 hap_up "$env" "r$i$new_color" &&
      run sleep "$((CHECK_INTER_MS * CHECK_FALL / 1000))" &&
      wait_for "haproxy checks to keep $env r$i$new_color UP" 5 hap_up "$env" "r$i$new_color"; }; then
      hapctl "$env" "set server app/r$i$new_color state maint"
      runq docker rm --force "$name"
      return 1
    fi
    [ "$DRY_RUN" = 1 ] || printf '%s %s %s\n' "$new_color" "$name" "$digest" >"$STATE/$env/slot$i"
    if [ -n "$old_name" ]; then
      tinfo "$env replica $i: stop the old $old_digest ($old_name), draining in the background"
      if [ "$DRY_RUN" = 1 ]; then
        retire "$env" "$i" "$old_color" "$old_name" "$old_digest"
      else
        retire "$env" "$i" "$old_color" "$old_name" "$old_digest" &
        RETIRING+=("$!") RETIRING_WHAT+=("$old_name ($env replica $i, $old_digest)")
      fi
    fi
  done
}

# wait_ready NAME PORT: the replica's own /readyz answers 200 (fails early if it exited).
wait_ready() {
  local name=$1 port=$2 deadline
  if [ "$DRY_RUN" = 1 ]; then
    wait_for "replica readiness" "$READY_TIMEOUT" curl -fsS "http://127.0.0.1:$port/readyz"
    return
  fi
  deadline=$(($(date +%s) + READY_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
      fail "$name exited"
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      fail "$name: /readyz not 200 within ${READY_TIMEOUT}s"
      return 1
    fi
    sleep 0.2
  done
}

# deploy_env ENV REGISTRY: roll ENV to $DIGEST; on failure roll back to what ran before and
# smoke-test that release (rollback_checked: readiness alone is no proof it serves).
# Returns 0 deployed, 1 failed, rolled back, and the release it went back to answers its
# smoke test; 2 failed and the rollback failed too (it did not complete, that release does
# not answer, or there was nothing to roll back to: ENV serves nothing).
deploy_env() {
  local env=$1 registry=$2 previous=""
  [ "$DRY_RUN" = 1 ] || previous=$(cat "$STATE/$env/digest" 2>/dev/null || true)
  stage "deploy to $env by digest: $registry/comments-api@$DIGEST (was: ${previous:-nothing})"
  if rollout "$env" "$registry" "$DIGEST" && env_ready "$env"; then
    [ "$DRY_RUN" = 1 ] || { printf '%s\n' "$DIGEST" >"$STATE/$env/digest"; printf '%s\n' "$previous" >"$STATE/$env/previous"; }
    return 0
  fi
  rollback_checked "$env" "$previous" || return 2
  return 1
}

# env_ready ENV: every replica UP in haproxy and /readyz through the load balancer.
env_ready() {
  local env=$1 lb_var=${1}_LB i
  stage "wait for readiness: $env (haproxy on 127.0.0.1:${!lb_var})"
  for i in $(seq 1 "$REPLICAS"); do
    local color=a
    [ "$DRY_RUN" = 1 ] || read -r color _ _ <<<"$(slot_get "$env" "$i")"
    wait_for "$env r$i$color UP" 20 hap_up "$env" "r$i$color" || return 1
  done
  wait_for "$env /readyz through haproxy" 20 curl -fsS "http://127.0.0.1:${!lb_var}/readyz" || return 1
  [ "$DRY_RUN" = 1 ] || hap "$env" "show servers state app" | awk 'NR > 1 && $6 == 2 { printf "    haproxy %s %s:%s op_state=%s\n", $4, $5, $19, $6 }'
}

rollback() {
  local env=$1 previous=$2 registry
  if [ -z "$previous" ] && [ "$DRY_RUN" = 0 ]; then
    fail "$env: no previous release to roll back to; taking the failed replicas out"
    local i
    for i in $(seq 1 "$REPLICAS"); do
      local color name digest
      read -r color name digest <<<"$(slot_get "$env" "$i")"
      [ -z "${name:-}" ] || { hap "$env" "set server app/r$i$color state maint" >/dev/null; docker rm --force "$name" >/dev/null; rm -f "$STATE/$env/slot$i"; }
    done
    # Nothing runs there now: no release to name as the next run's rollback target.
    rm -f "$STATE/$env/digest"
    return 1
  fi
  [ "$DRY_RUN" = 0 ] || previous="sha256:<previous-digest>"
  registry=127.0.0.1:$DEV_PORT
  [ "$env" = staging ] || registry=127.0.0.1:$PROD_PORT
  stage "ROLLBACK $env to the previous digest $previous"
  local keep=$DIGEST
  DIGEST=$previous
  # The previous schema is still compatible (expand/contract): no migration on the way back.
  if rollout "$env" "$registry" "$previous" --no-migrate && env_ready "$env"; then
    DIGEST=$keep
    # What the environment runs, and so the next run's rollback target: never the release
    # just rejected (after a failed E2E it was already recorded).
    [ "$DRY_RUN" = 1 ] || printf '%s\n' "$previous" >"$STATE/$env/digest"
    info "$env is back on $previous"
    return 0
  fi
  DIGEST=$keep
  fail "$env: rollback to $previous failed"
  return 1
}

# rollback_checked ENV PREVIOUS: ENV back on PREVIOUS (local target), then the smoke test
# of that release (without --prod-smoke-hook, written for the new release): readiness alone
# said the replicas answer /readyz, not that the release serves (a schema, a setting or a
# dependency changed since it last ran). Returns 0 (back on it, it serves), 1 (no rollback,
# or the release it went back to does not answer: named).
rollback_checked() {
  local env=$1 previous=$2 lb_var=${1}_LB down
  rollback "$env" "$previous" || return 1
  [ "$DRY_RUN" = 0 ] || previous="sha256:<previous-digest>"
  stage "re-check $env after the rollback: smoke test of $previous"
  if run_waited "$PY" scripts/pipeline_e2e.py smoke "http://127.0.0.1:${!lb_var}"; then
    tinfo "$env is back on $previous and it answers its smoke test"
    return 0
  fi
  down="staging is down (production untouched)"
  [ "$env" = staging ] || down="production is down, act now"
  fail "$env was rolled back to $previous, but that release does not answer its smoke test either (above): $down"
  return 1
}

# The dockerd a local run started because no engine answered is recorded in the state
# directory (ENGINE_RECORD: its PID and its start time, field 22 of /proc/PID/stat), so that
# whoever tears the stack down later (--down after --keep) stops it too. An engine the run
# found running is never recorded, so never stopped. PID and start time name one process:
# a PID reused since by another process is not taken for the engine.
ENGINE_RECORD=dockerd.started
proc_start() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
record_engine() {
  [ -n "$DOCKER_ENGINE_PID" ] && [ -n "$STATE" ] || return 0
  printf 'pid=%s\nstart=%s\n' "$DOCKER_ENGINE_PID" "$(proc_start "$DOCKER_ENGINE_PID")" >"$STATE/$ENGINE_RECORD"
}

# engine_down: stop the recorded engine (after the stack's containers and images are gone),
# unless it is no longer that process, or containers of others run on it (stopping it would
# stop them: it is left running, with a warning naming its PID). 1 when it would not stop.
engine_down() {
  local record="$STATE/$ENGINE_RECORD" pid start others
  [ -f "$record" ] || return 0
  pid=$(sed -n 's/^pid=//p' "$record")
  start=$(sed -n 's/^start=//p' "$record")
  rm -f "$record"
  # Handled here, whatever the outcome: the EXIT trap's docker_engine_stop leaves it alone.
  [ "$pid" != "$DOCKER_ENGINE_PID" ] || DOCKER_ENGINE_PID=""
  if ! [[ $pid =~ ^[1-9][0-9]*$ ]] || ! alive "$pid" || [ -z "$start" ] ||
    [ "$(proc_start "$pid")" != "$start" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    echo "the Docker engine this stack started (pid ${pid:-?}) is no longer running"
    return 0
  fi
  others=$(docker ps -q 2>/dev/null | wc -l)
  if [ "$others" -gt 0 ]; then
    warn "the Docker engine this stack started (pid $pid) is left running: $others other container(s) run on it; stop it (kill $pid) once they are gone"
    return 0
  fi
  DOCKER_ENGINE_PID=$pid
  docker_engine_stop
  DOCKER_ENGINE_PID=""
  if alive "$pid" && [ "$(proc_start "$pid")" = "$start" ]; then
    fail "the Docker engine this stack started (pid $pid) is still running 20 s after SIGTERM"
    return 1
  fi
}

local_down() {
  [ -n "$STATE" ] || return 0
  local rc=0
  if [ ! -s "$STATE/stack.env" ]; then
    # No stack was started, but maybe an engine (a kept run that stopped before its stack);
    # remove the state directory only if this run made it.
    engine_down || rc=1
    [ "$AUTO_STATE" = 0 ] || rm -rf "$STATE"
    return "$rc"
  fi
  # shellcheck disable=SC1091
  . "$STATE/stack.env"
  echo "tearing down the local stack $STACK ($STATE)"
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL.stack=$STACK" 2>/dev/null || true)
  # shellcheck disable=SC2086 # one id per word
  [ -z "$ids" ] || docker rm --force $ids >/dev/null 2>&1 || true
  # By PID, only while each PID still names the process the stack started.
  local v killed=()
  for v in "${STACK_PIDS[@]}"; do
    if ours "$v"; then
      kill "${!v}" 2>/dev/null || true
      killed+=("${!v}")
    elif alive "${!v:-}"; then
      warn "pid ${!v} ($v of this stack) is another process now: left alone"
    fi
  done
  if [ -n "${PG_DIR:-}" ] && [ -f "$PG_DIR/data/postmaster.pid" ]; then
    local as_pg=() pg_ctl
    [ "$(id -u)" != 0 ] || as_pg=(runuser -u postgres --)
    pg_ctl=$(pg_binary pg_ctl)
    "${as_pg[@]}" "$pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  [ ! -d "$STATE/gnupg" ] || GNUPGHOME="$STATE/gnupg" gpgconf --kill all 2>/dev/null || true
  [ ! -d "$STATE/gnupg-verify" ] || GNUPGHOME="$STATE/gnupg-verify" gpgconf --kill all 2>/dev/null || true
  # Images pulled from this stack's registries (their ports were ours).
  local refs
  refs=$({
    docker images --digests --format '{{.Repository}}@{{.Digest}}'
    docker images --format '{{.Repository}}:{{.Tag}}'
  } 2>/dev/null | grep -E "^127\.0\.0\.1:(${DEV_PORT}|${PROD_PORT})/" | grep -v -e '<none>' | sort -u || true)
  # shellcheck disable=SC2086
  [ -z "$refs" ] || docker rmi $refs >/dev/null 2>&1 || true
  for p in "${killed[@]}"; do
    for _ in $(seq 1 50); do alive "$p" || break; sleep 0.1; done
  done
  [ -z "${PG_DIR:-}" ] || rm -rf "$PG_DIR"
  engine_down || rc=1
  rm -rf "$STATE" || rc=1
  [ -z "${STACK:-}" ] || python3 scripts/free_ports.py release "$STACK" || rc=1
  return "$rc"
}

# lock_state: one run (or --down) at a time on a state directory. Two would start replicas
# in the same slots and drive the same haproxy, and the second one's exit tore the first
# one's stack down. The lock is a file naming the run's PID, removed at exit; one whose
# process is gone is stale and taken over, so a killed run leaves nothing that blocks.
# The check and the takeover run under a short flock on the directory itself (not held by
# the stack's long-lived children): two runs that both found one stale lock both took it.
LOCKED=0
lock_state() {
  local holder
  holder=$(
    (
      if command -v flock >/dev/null && ! flock -w 10 9; then
        echo "?"
        exit 0
      fi
      lock="$STATE/.lock"
      (set -o noclobber && printf '%s\n' "$$" >"$lock") 2>/dev/null && exit 0
      h=$(cat "$lock" 2>/dev/null || true)
      if [[ $h =~ ^[0-9]+$ ]] && kill -0 "$h" 2>/dev/null; then
        echo "$h"
        exit 0
      fi
      printf '%s\n' "$$" >"$lock" || echo "?" # stale: its run is gone
    ) 9<"$STATE"
  )
  case "$holder" in
  "")
    LOCKED=1
    return 0
    ;;
  "?") fail "cannot take the lock $STATE/.lock" ;;
  *) fail "another deploy.sh run (pid $holder) is using $STATE: wait for it or use another --state-dir (no such run? remove $STATE/.lock)" ;;
  esac
  STATE="" # not ours to tear down
  exit 1
}
unlock_state() {
  if [ "$LOCKED" = 1 ] && [ -n "$STATE" ] && [ "$(cat "$STATE/.lock" 2>/dev/null)" = "$$" ]; then
    rm -f "$STATE/.lock"
  fi
  LOCKED=0
}

show_digests() {
  stage "summary"
  [ "$DRY_RUN" = 0 ] || { info "(dry run)"; return; }
  info "release $TAG  digest $DIGEST"
  for env in staging production; do
    local i color name digest
    for i in $(seq 1 "$REPLICAS"); do
      read -r color name digest <<<"$(slot_get "$env" "$i")"
      info "$env r$i$color: $(docker inspect -f '{{.Config.Image}}' "${name:-none}" 2>/dev/null || echo none)"
    done
  done
}

pipeline_local() {
  local explicit_state=1
  if [ -z "$STATE" ]; then
    explicit_state=0
    AUTO_STATE=1
    if [ "$DRY_RUN" = 1 ]; then STATE=/tmp/comments-pipeline.XXXXXX; else STATE=$(mktemp -d /tmp/comments-pipeline.XXXXXX); fi
  fi
  if [ "$DRY_RUN" = 0 ]; then
    mkdir -p "$STATE"
    STATE=$(cd "$STATE" && pwd)
    chmod 711 "$STATE"
    lock_state
  fi
  [ "$explicit_state" = 1 ] || info "state directory: $STATE (removed at exit unless --keep)"

  # Before the tests and the engine: without Docker the engine stage waited 30 s for a
  # dockerd that was never there, and local_up would have installed it only afterwards.
  [ "$DRY_RUN" = 1 ] || { waited_tools; local_tools; }
  stage_tests
  stage_scans
  if [ "$DRY_RUN" = 0 ]; then
    stage "docker engine"
    # Same data root as scripts/image-test.sh: the base images are cached there.
    local engine_rc=0
    docker_engine_up "${DOCKER_DATA_ROOT:-/var/lib/comments-api-docker}" "$STATE/dockerd.log" "$STATE/dockerd.pid" ||
      engine_rc=$?
    # Recorded even when it never answered: a kept run leaves it to --down.
    record_engine
    [ "$engine_rc" = 0 ] || return 1
  fi
  stage_build
  local_up
  push_dev "127.0.0.1:$DEV_PORT"
  local lb_var
  local staged=0 was=""
  [ "$DRY_RUN" = 1 ] || was=$(cat "$STATE/staging/digest" 2>/dev/null || true)
  deploy_env staging "127.0.0.1:$DEV_PORT" || staged=$?
  if [ "$staged" != 0 ]; then
    fail "stopped in staging: $DIGEST never reaches production"
    # Production is untouched either way (exit 1); a staging left serving nothing is named.
    [ "$staged" = 1 ] || fail "staging is not back on ${was:-a previous release (there was none)}: staging is down (production untouched)"
    return 1
  fi
  lb_var=staging_LB
  if ! e2e_and_load "http://127.0.0.1:${!lb_var}"; then
    fail "E2E or load test failed in staging: $DIGEST never reaches production"
    # Production is untouched whatever comes of it (exit 1); a staging that serves neither
    # release is named: the next runs stop there.
    rollback_checked staging "$(cat "$STATE/staging/previous" 2>/dev/null || true)" || true
    return 1
  fi
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: what a failed E2E or load test runs next, then exit 1)"
    rollback_checked staging "" || true
  fi
  promote "127.0.0.1:$DEV_PORT" "127.0.0.1:$PROD_PORT" || {
    fail "promotion failed: production untouched"
    return 1
  }
  local previous=""
  [ "$DRY_RUN" = 1 ] || previous=$(cat "$STATE/production/digest" 2>/dev/null || true)
  local deployed=0
  deploy_env production "127.0.0.1:$PROD_PORT" || deployed=$?
  if [ "$deployed" = 1 ]; then
    fail "production rollout failed; rolled back to $previous"
    return 2
  elif [ "$deployed" != 0 ]; then
    fail "production rollout failed, and production is not back on ${previous:-a previous release (there was none)}"
    return 3
  fi
  lb_var=production_LB
  stage "smoke test production (http://127.0.0.1:${!lb_var})"
  if ! smoke production "http://127.0.0.1:${!lb_var}"; then
    fail "production smoke test failed for $DIGEST"
    if [ "$DRY_RUN" = 0 ] && [ "$previous" = "$DIGEST" ]; then
      # A re-run of the release production already served: "rolling back" to it changes
      # nothing (and said exit 2, rolled back, while production still fails).
      fail "production ran $DIGEST before this run: there is no other release to roll back to"
      return 3
    fi
    rollback_checked production "$previous" && return 2
    return 3
  fi
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: what a failed production rollout or smoke test runs next)"
    rollback_checked production "" || true
  fi
  show_digests
  # Released, but an old replica is still on this host: not a plain success (see rollout).
  [ "${#LEFTOVER[@]}" = 0 ] || return 4
}

# ========================================================================= target: minikube
# kustomization DIR OVERLAY REGISTRY: a throwaway kustomization that pins the overlay's image
# to the release digest. The base names the image `comments-api`; an overlay may already
# rename it (production points at its registry with a placeholder digest), so both names
# are pinned: the one that no longer exists matches nothing.
kustomization() {
  local dir=$1 overlay=$2 registry=$3 rel renamed
  run mkdir -p "$dir"
  rel=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$REPO/$overlay" "$dir")
  renamed=$(overlay_image_name "$REPO/$overlay/kustomization.yaml")
  show write "$dir/kustomization.yaml" "(resources: [$rel], images: comments-api${renamed:+ and $renamed} -> $registry/comments-api@$DIGEST)"
  [ "$DRY_RUN" = 1 ] && return 0
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n' "$rel"
    for name in comments-api ${renamed:+"$renamed"}; do
      printf '  - name: %s\n    newName: %s/comments-api\n    digest: %s\n' "$name" "$registry" "$DIGEST"
    done
  } >"$dir/kustomization.yaml"
}

# overlay_image_name FILE: the newName an overlay gives the `comments-api` image (if any).
overlay_image_name() {
  [ -f "$1" ] || return 0
  "$PY" -c '
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1])) or {}
for image in doc.get("images") or []:
    if image.get("name") == "comments-api" and image.get("newName", "comments-api") != "comments-api":
        print(image["newName"])
' "$1"
}

# k8s_image ENV: the app image of ENV's Deployment (empty when there is none). Fails when
# the Deployment cannot be read: that is not "none" (it hid a flaky API as a first install).
k8s_image() {
  kubectl --context "$KUBE_CONTEXT" --namespace "comments-$1" --request-timeout=20s \
    get deployment comments-api --ignore-not-found -o jsonpath='{.spec.template.spec.containers[?(@.name=="app")].image}'
}
# k8s_changed ENV: 0 when this run changed ENV's Deployment (K8S_BEFORE: its image before
# the apply), 1 when it did not (no apply yet, a refused apply, the same digest again:
# `rollout undo` would then take ENV back to the release BEFORE the one it serves), 2 when
# the Deployment cannot be read now, so nobody can tell.
K8S_BEFORE="" K8S_READ=0 K8S_APPLIED=0
k8s_changed() {
  local now
  [ "$DRY_RUN" = 0 ] || return 0
  [ "$K8S_APPLIED" = 1 ] || return 1
  now=$(k8s_image "$1") || return 2
  [ "$now" != "$K8S_BEFORE" ]
}
# k8s_served: what the environment of the last k8s_deploy served before it, for messages.
k8s_served() {
  if [ "$K8S_READ" = 1 ]; then printf '%s' "${K8S_BEFORE:-nothing}"; else printf 'unknown: its Deployment could not be read'; fi
}
k8s_deploy() {
  local env=$1 registry=$2 ns=comments-$1 dir="$REPO/build/pipeline-kustomize/$1"
  local kc=(kubectl --context "$KUBE_CONTEXT" --namespace "$ns")
  stage "deploy to $env by digest (kubectl apply -k, namespace $ns)"
  K8S_BEFORE="" K8S_READ=0 K8S_APPLIED=0
  if [ "$DRY_RUN" = 0 ]; then
    # The rollback decides on this value: without it, nothing is changed.
    if ! K8S_BEFORE=$(k8s_image "$env"); then
      K8S_BEFORE=""
      fail "cannot read deployment/comments-api in $ns (kubectl, above): $env is left as it is"
      return 1
    fi
    K8S_READ=1
  fi
  info "$env serves ${K8S_BEFORE:-nothing yet}"
  kustomization "$dir" "deploy/k8s/overlays/$env" "$registry" || return 1
  # A Job's pod template is immutable: the previous release's migration Job goes first.
  run_waited "${kc[@]}" delete job comments-api-migrate --ignore-not-found --wait=true || return 1
  K8S_APPLIED=1
  run kubectl --context "$KUBE_CONTEXT" apply -k "$dir" || return 1
  # New pods stay unready until the schema is at their revision (readiness checks it), so
  # the rollout cannot overtake the migration. As long as the Job may run (its
  # activeDeadlineSeconds): on a first install it retries while the database starts.
  if ! run_waited "${kc[@]}" wait --for=condition=complete job/comments-api-migrate --timeout=600s; then
    fail "the migration Job comments-api-migrate did not complete in $env: the new pods stay unready, the previous ones keep serving"
    k8s_why "$env"
    return 1
  fi
  stage "wait for readiness: $env (kubectl rollout status)"
  if ! run_waited "${kc[@]}" rollout status deployment/comments-api --timeout=300s; then
    fail "the rollout of $env did not complete: the new pods are not ready (maxUnavailable 0: the previous ones keep serving)"
    k8s_why "$env"
    return 1
  fi
}

# k8s_why ENV: after a failed wait, what the cluster says about it: the Job's conditions
# (BackoffLimitExceeded, DeadlineExceeded), the pods' states (ImagePullBackOff,
# CrashLoopBackOff, CreateContainerConfigError, Running 0/1), the namespace's recent
# warnings (the pull error's registry message, failing probes) and the migration's last
# log lines. `kubectl wait` and `rollout status` say only that time ran out.
k8s_why() {
  local kc=(kubectl --context "$KUBE_CONTEXT" --namespace "comments-$1" --request-timeout=20s)
  [ "$DRY_RUN" = 0 ] || return 0
  printf '    what the cluster says (namespace comments-%s):\n' "$1" >&2
  {
    "${kc[@]}" get job comments-api-migrate \
      -o jsonpath='{range .status.conditions[*]}job/comments-api-migrate {.type}={.status}: {.reason}: {.message}{"\n"}{end}'
    "${kc[@]}" get pods --selector app.kubernetes.io/name=comments-api -o wide
    "${kc[@]}" get events --field-selector type=Warning --sort-by=.lastTimestamp | tail -n 15
    echo "last lines of the migration's log:"
    "${kc[@]}" logs job/comments-api-migrate --tail=20
  } 2>&1 | sed 's/^/      /' >&2 || true
}

# k8s_smoke ENV KIND: port-forward the Service to 127.0.0.1 and run the checks: KIND e2e
# (staging's gate), smoke (a new release, with --prod-smoke-hook in production) or rollback
# (the release a rollback went back to: the smoke test without the hook, which was written
# for the new release's digest).
PF_PID=""
k8s_smoke() {
  local env=$1 kind=$2 port
  port=18080
  [ "$DRY_RUN" = 1 ] || port=$(free_ports 1)
  show kubectl --context "$KUBE_CONTEXT" --namespace "comments-$env" port-forward svc/comments-api "$port:http" "&"
  if [ "$DRY_RUN" = 0 ]; then
    kubectl --context "$KUBE_CONTEXT" --namespace "comments-$env" port-forward svc/comments-api "$port:http" >/dev/null 2>&1 &
    PF_PID=$!
  fi
  local rc=0
  # Each try bounded: a tunnel that takes the connection and never answers held curl, and
  # the run, past wait_for's deadline (which is checked between tries only).
  wait_for "port-forward" "$READY_TIMEOUT" curl -fsS --max-time 5 "http://127.0.0.1:$port/readyz" || rc=1
  if [ "$rc" = 0 ]; then
    case $kind in
      e2e) e2e_and_load "http://127.0.0.1:$port" || rc=1 ;;
      rollback) run_waited "$PY" scripts/pipeline_e2e.py smoke "http://127.0.0.1:$port" || rc=1 ;;
      *) smoke "$env" "http://127.0.0.1:$port" || rc=1 ;;
    esac
  fi
  stop_port_forward
  return "$rc"
}
# stop_port_forward: end the smoke test's port-forward, by PID. The EXIT trap calls it too: a
# run interrupted during the checks (Ctrl-C, a CI's SIGTERM) left it running after deploy.sh
# was gone, holding a tunnel into the cluster (and Ctrl-C never reaches it: a background
# job of a script ignores SIGINT).
stop_port_forward() {
  [ -n "$PF_PID" ] || return 0
  if alive "$PF_PID"; then
    kill "$PF_PID" 2>/dev/null || true
    wait "$PF_PID" 2>/dev/null || true
  fi
  PF_PID=""
}

k8s_rollback() {
  local env=$1
  stage "ROLLBACK $env: kubectl rollout undo"
  run kubectl --context "$KUBE_CONTEXT" --namespace "comments-$env" rollout undo deployment/comments-api &&
    run_waited kubectl --context "$KUBE_CONTEXT" --namespace "comments-$env" rollout status deployment/comments-api --timeout=300s
}

# k8s_recheck_rollback ENV: after `rollout undo` of ENV, whether the release it went back to
# answers: readiness through a new port-forward (READY_TIMEOUT), then the smoke test. A
# completed `rollout status` says the pods are ready, not that the release serves (a schema,
# a Secret or a dependency changed since it last ran): "rolled back" was reported with no
# proof.
# Returns 0 (rolled back, it serves) or 1 (rolled back, it does not: ENV is down).
k8s_recheck_rollback() {
  local env=$1
  stage "re-check $env after the rollback: readiness and smoke test of ${K8S_BEFORE:-the previous release}"
  if k8s_smoke "$env" rollback; then
    tinfo "$env is back on ${K8S_BEFORE:-the previous release} and it answers its smoke test"
    return 0
  fi
  return 1
}

# minikube_preflight: the tools and a cluster that answers, before the tests and the build
# (found at `kubectl apply`, after the build and the push, it left a release half way).
minikube_preflight() {
  local missing=() tool
  for tool in kubectl docker skopeo gpg curl; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    fail "--target minikube needs ${missing[*]} on the PATH"
    exit 1
  fi
  if ! kubectl --context "$KUBE_CONTEXT" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    fail "no Kubernetes cluster answers on kubectl context '$KUBE_CONTEXT' (KUBE_CONTEXT): start it (scripts/provision-k8s.sh) or use --target local"
    exit 1
  fi
  # The Secrets and the ConfigMaps an overlay reads but does not make are the operator's to
  # create (docs/deployment.md, "Secrets"; production-aws's rds-ca-bundle). Without one the
  # migration Job's pod never started (CreateContainerConfigError) and the run stopped only
  # when the Job wait timed out: after the tests, the build and the push, with a rollback.
  local env kind name reads absent=() absent_cms=()
  for env in staging production; do
    reads=$(overlay_reads "deploy/k8s/overlays/$env") || { fail "cannot render deploy/k8s/overlays/$env"; exit 1; }
    while read -r kind name; do
      [ -n "$name" ] || continue
      kubectl --context "$KUBE_CONTEXT" --namespace "comments-$env" --request-timeout=20s \
        get "$kind" "$name" >/dev/null 2>&1 && continue
      if [ "$kind" = secret ]; then absent+=("comments-$env/$name"); else absent_cms+=("comments-$env/$name"); fi
    done <<<"$reads"
  done
  if [ "${#absent[@]}" -gt 0 ]; then
    fail "missing Secrets (namespace/name): ${absent[*]}; create them first (docs/deployment.md, \"Secrets\")"
  fi
  if [ "${#absent_cms[@]}" -gt 0 ]; then
    local how=()
    for name in "${absent_cms[@]}"; do
      case "${name#*/}" in
        rds-ca-bundle) how+=("$name: KUBE_CONTEXT=$KUBE_CONTEXT RDS_CA_NAMESPACE=${name%%/*} scripts/provision-k8s.sh --rds-ca-bundle FILE (AWS's RDS CA bundle, docs/deployment.md)") ;;
        *) how+=("$name: kubectl --context $KUBE_CONTEXT --namespace ${name%%/*} create configmap ${name#*/} --from-file=...") ;;
      esac
    done
    fail "missing ConfigMaps (namespace/name): ${absent_cms[*]}; create them first: $(IFS=';'; printf '%s' "${how[*]}")"
  fi
  [ "${#absent[@]}" -eq 0 ] && [ "${#absent_cms[@]}" -eq 0 ] || exit 1
}

# overlay_reads DIR: "secret NAME" and "configmap NAME" lines, the Secrets and ConfigMaps an
# overlay's objects read that it does not make itself (an Ingress's TLS Secret is
# cert-manager's, an ExternalSecret's target the operator's; a ConfigMap it renders, e.g. a
# generated one, is its own; an optional ConfigMap does not keep a pod from starting).
overlay_reads() {
  local rendered
  rendered=$(kubectl kustomize "$REPO/$1") || return 1
  "$PY" -c '
import sys, yaml
names, made, maps, made_maps = set(), set(), set(), set()
def walk(node, key=None):
    if isinstance(node, dict):
        if key in ("secret", "secretRef", "secretKeyRef", "accessKeyId", "secretAccessKey") and isinstance(node.get("name"), str):
            names.add(node["name"])
        if key in ("configMap", "configMapRef", "configMapKeyRef") and isinstance(node.get("name"), str) and node.get("optional") is not True:
            maps.add(node["name"])
        for k, v in node.items():
            if k == "secretName" and isinstance(v, str):
                names.add(v)
            walk(v, k)
    elif isinstance(node, list):
        for item in node:
            walk(item, key)
for doc in yaml.safe_load_all(sys.stdin):
    if not doc or doc.get("kind") == "Ingress":
        continue
    if doc.get("kind") == "ExternalSecret":
        made.add(doc["spec"]["target"]["name"])
        continue
    if doc.get("kind") == "ConfigMap":
        made_maps.add(doc["metadata"]["name"])
    walk(doc.get("spec"))
for name in sorted(names - made):
    print("secret", name)
for name in sorted(maps - made_maps):
    print("configmap", name)
' <<<"$rendered"
}

# One run at a time per cluster: two runs each deleted the other's migration Job, waited on
# it, and one's `rollout undo` could take production back from the other's release. The
# lock is a ConfigMap (`kubectl create` is atomic: AlreadyExists for the second run), taken
# before the tests and the build and removed at exit by the run that made it.
LOCK_NS=comments-production
LOCK_NAME=comments-api-deploy-lock
LOCK_HOLDER=""
k8s_lock() {
  local holder err other
  holder="$(uname -n) pid $$, release $TAG, since $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  show kubectl --context "$KUBE_CONTEXT" --namespace "$LOCK_NS" create configmap "$LOCK_NAME" "--from-literal=holder=<host, pid, release, start>"
  [ "$DRY_RUN" = 0 ] || return 0
  if err=$(kubectl --context "$KUBE_CONTEXT" --namespace "$LOCK_NS" --request-timeout=20s \
    create configmap "$LOCK_NAME" --from-literal=holder="$holder" 2>&1 >/dev/null); then
    LOCK_HOLDER=$holder
    return 0
  fi
  if [[ $err == *AlreadyExists* ]]; then
    other=$(kubectl --context "$KUBE_CONTEXT" --namespace "$LOCK_NS" --request-timeout=20s \
      get configmap "$LOCK_NAME" -o 'jsonpath={.data.holder}' 2>/dev/null || true)
    fail "another deploy runs on this cluster: $LOCK_NS/configmap/$LOCK_NAME is held by ${other:-a run that named no holder}; nothing was changed. If that run is gone (killed), remove the lock: kubectl --context $KUBE_CONTEXT --namespace $LOCK_NS delete configmap $LOCK_NAME"
  else
    fail "cannot take the deploy lock $LOCK_NS/configmap/$LOCK_NAME: $err"
  fi
  exit 1
}
# k8s_unlock: remove the lock this run took (only while it still names this run).
k8s_unlock() {
  local kc=(kubectl --context "$KUBE_CONTEXT" --namespace "$LOCK_NS" --request-timeout=20s)
  [ "$DRY_RUN" = 0 ] && [ -n "$LOCK_HOLDER" ] || return 0
  if [ "$("${kc[@]}" get configmap "$LOCK_NAME" -o 'jsonpath={.data.holder}' 2>/dev/null)" = "$LOCK_HOLDER" ] &&
    "${kc[@]}" delete configmap "$LOCK_NAME" >/dev/null; then
    LOCK_HOLDER=""
    return 0
  fi
  warn "the deploy lock $LOCK_NS/configmap/$LOCK_NAME may still be there: the next run stops on it; check, then: kubectl --context $KUBE_CONTEXT --namespace $LOCK_NS delete configmap $LOCK_NAME"
}

pipeline_minikube() {
  [ "$DRY_RUN" = 1 ] || { waited_tools; minikube_preflight; }
  k8s_lock
  if [ -z "$STATE" ]; then
    AUTO_STATE=1
    if [ "$DRY_RUN" = 1 ]; then STATE=/tmp/comments-pipeline.XXXXXX; else STATE=$(mktemp -d /tmp/comments-pipeline.XXXXXX); fi
  fi
  [ "$DRY_RUN" = 1 ] || mkdir -p "$STATE"
  stage_tests
  stage_scans
  if ! reuse_pushed "$DEV_REGISTRY"; then
    stage_build
    push_dev "$DEV_REGISTRY"
  fi
  if ! k8s_deploy staging "$DEV_REGISTRY" || ! k8s_smoke staging e2e; then
    fail "stopped in staging: $DIGEST never reaches production"
    local changed=0
    k8s_changed staging || changed=$?
    case $changed in
      0)
        # Production is untouched whatever comes of it (exit 1), but an SRE must hear of a
        # staging that serves neither release: the next runs stop there.
        if ! k8s_rollback staging; then
          fail "the rollback of staging did not complete (kubectl, above): staging may serve nothing (production untouched); check: kubectl --context $KUBE_CONTEXT --namespace comments-staging rollout history deployment/comments-api"
        elif ! k8s_recheck_rollback staging; then
          fail "staging was rolled back to ${K8S_BEFORE:-the previous release}, but that release does not answer its smoke test either (above): staging is down (production untouched); check: kubectl --context $KUBE_CONTEXT --namespace comments-staging rollout history deployment/comments-api"
        fi
        ;;
      1) fail "staging was not changed by this run (it serves $(k8s_served)): no rollback" ;;
      *) fail "cannot read deployment/comments-api in comments-staging to tell whether this run changed it (before: $(k8s_served)): no rollback; check: kubectl --context $KUBE_CONTEXT --namespace comments-staging rollout history deployment/comments-api" ;;
    esac
    return 1
  fi
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: what a failed staging rollout, E2E or load test runs next, then exit 1)"
    k8s_rollback staging || true
    k8s_recheck_rollback staging || true
  fi
  promote "$DEV_REGISTRY" "$PROD_REGISTRY" || { fail "promotion failed: production untouched"; return 1; }
  if ! k8s_deploy production "$PROD_REGISTRY" || ! k8s_smoke production smoke; then
    fail "production failed for $DIGEST"
    local changed=0
    k8s_changed production || changed=$?
    if [ "$changed" = 2 ]; then
      # The apply ran: production may serve the failed release. Guessing either way could
      # drop the good one (undo) or leave the bad one (no undo).
      fail "cannot read deployment/comments-api in comments-production to tell whether this run changed it (before: $(k8s_served)): no rollback, act now: kubectl --context $KUBE_CONTEXT --namespace comments-production rollout history deployment/comments-api"
      return 3
    fi
    if [ "$changed" = 1 ]; then
      fail "production was not changed by this run (it serves $(k8s_served)): no rollback"
      # Already on this digest before the run: production fails on it, nothing to undo.
      [ "$K8S_BEFORE" = "$PROD_REGISTRY/comments-api@$DIGEST" ] && return 3
      return 1
    fi
    if ! k8s_rollback production; then
      fail "the rollback of production did not complete (kubectl, above): act now: kubectl --context $KUBE_CONTEXT --namespace comments-production rollout history deployment/comments-api"
      return 3
    fi
    k8s_recheck_rollback production && return 2
    fail "production was rolled back to ${K8S_BEFORE:-the previous release}, but that release does not answer its smoke test either (above): production is down, act now"
    return 3
  fi
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: what a failed production rollout or smoke test runs next)"
    k8s_rollback production || true
    k8s_recheck_rollback production || true
  fi
  stage "released $TAG = $DIGEST to production"
  if [ "$DRY_RUN" = 1 ]; then
    info "(dry run: at exit, whatever the outcome, the lock goes)"
    show kubectl --context "$KUBE_CONTEXT" --namespace "$LOCK_NS" delete configmap "$LOCK_NAME"
  fi
}

# ===================================================================================== main
if [ -n "$RENDER" ]; then
  case $RENDER in staging) registry=$DEV_REGISTRY ;; production) registry=$PROD_REGISTRY ;; *) die "--render staging|production" ;; esac
  [[ $DIGEST =~ ^sha256:[0-9a-f]{64}$ ]] || die "--render needs --digest sha256:<64 hex>"
  # A directory of its own: build/pipeline-kustomize/ENV is shared by every render and
  # minikube run from this checkout, and one's write between another's write and its
  # `kubectl kustomize` printed the other's digest. Physical (pwd -P), as the relative path
  # to the overlay must resolve from it; gone at exit, Ctrl-C or SIGTERM.
  RENDER_DIR=$(mktemp -d --tmpdir comments-render.XXXXXX) || die "--render: cannot make a temporary directory (mktemp, above)"
  trap 'rm -rf "$RENDER_DIR"' EXIT
  RENDER_DIR=$(cd "$RENDER_DIR" && pwd -P)
  trap 'exit 130' INT
  trap 'exit 143' TERM
  kustomization "$RENDER_DIR" "deploy/k8s/overlays/$RENDER" "$registry" >&2
  kubectl kustomize "$RENDER_DIR"
  exit 0
fi
if [ "$DOWN" = 1 ]; then
  [ -n "$STATE" ] || die "--down needs --state-dir"
  # Idempotent: a second --down (or one after a run without --keep) has nothing to do.
  if [ ! -d "$STATE" ]; then
    echo "nothing to tear down: no state directory $STATE"
    exit 0
  fi
  STATE=$(cd "$STATE" && pwd)
  lock_state
  # Every step of the teardown is tried, even after one fails.
  set +e
  local_down
  down_rc=$?
  unlock_state
  exit "$down_rc"
fi
printf 'comments-api pipeline: target %s, release %s%s\n' "$TARGET" "$TAG" "$([ "$DRY_RUN" = 1 ] && echo ' (dry run: commands are printed, not run)')"
# shellcheck disable=SC2329 # the EXIT trap
finish() {
  local rc=$?
  # Under errexit a failing cleanup command ended the trap there: the rest of the teardown
  # (the engine this run started, the state directory) was skipped and its status replaced
  # the pipeline's exit code (2 or 3 became 1).
  set +e
  # First: an interrupted run stops waiting now, before the report and the teardown.
  stop_waited
  case $rc in
    0) printf '\nPIPELINE OK: %s (%s) released to production\n' "$TAG" "${DIGEST:-}" ;;
    1) printf '\nPIPELINE FAILED before production (production untouched)\n' >&2 ;;
    2) printf '\nPIPELINE FAILED in production: rolled back automatically\n' >&2 ;;
    3) printf '\nPIPELINE FAILED in production and the rollback failed too: act now\n' >&2 ;;
    4) printf '\nPIPELINE RELEASED %s (%s) to production, but old replicas could not be retired (below): remove them\n' "$TAG" "${DIGEST:-}" >&2 ;;
    *) printf '\nPIPELINE STOPPED (exit %s): interrupted or an unexpected error, see above\n' "$rc" >&2 ;;
  esac
  if [ "${#LEFTOVER[@]}" -gt 0 ]; then
    printf '!!! old replicas that could not be retired (remove what is left: docker rm --force NAME)%s:\n' \
      "$([ "$KEEP" = 1 ] || echo '; the teardown below removes the containers of this stack')" >&2
    local what
    for what in "${LEFTOVER[@]}"; do
      printf '!!!   %s: %s\n' "$what" "$(container_state "${what%% *}")" >&2
    done
  fi
  # Only a stack this run holds the lock of (or made the directory of): a run stopped while
  # it waited for the lock (its flock, up to 10 s) tore down the stack of the run holding it.
  if [ "$TARGET" = local ] && [ "$DRY_RUN" = 0 ] && [ "$KEEP" = 0 ] &&
    { [ "$LOCKED" = 1 ] || [ "$AUTO_STATE" = 1 ]; }; then local_down; fi
  unlock_state
  # An engine this run started serves the kept stack; otherwise it goes, by PID.
  if [ "$KEEP" = 1 ] && [ -n "$DOCKER_ENGINE_PID" ]; then
    printf 'the Docker engine this run started (pid %s) keeps running for the kept stack: %s --down --state-dir %s stops it\n' \
      "$DOCKER_ENGINE_PID" "$0" "$STATE"
  else
    docker_engine_stop
  fi
  [ "$TARGET" != minikube ] || { stop_port_forward; k8s_unlock; }
  if [ "$TARGET" = minikube ] && [ "$DRY_RUN" = 0 ] && [ -n "$STATE" ]; then
    # The gpg agents of this run's keyrings; the state directory when the run made it.
    for home in "$STATE/gnupg" "$STATE/gnupg-verify"; do
      [ ! -d "$home" ] || GNUPGHOME=$home gpgconf --kill all 2>/dev/null || true
    done
    [ "$AUTO_STATE" = 0 ] || rm -rf "$STATE"
  fi
  exit "$rc"
}
trap finish EXIT
# Ctrl-C or a CI timeout still tears down through the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM
# Not called behind `||`: errexit stays on for every unchecked command inside.
if [ "$TARGET" = local ]; then pipeline_local; else pipeline_minikube; fi
