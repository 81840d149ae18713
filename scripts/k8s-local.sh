#!/usr/bin/env bash
# Builds the image, loads it into the minikube cluster of scripts/provision-k8s.sh, creates
# the local namespace's Secrets once (random values, never written to disk), applies the
# local overlay, runs the migration Job and waits for the rollout. Idempotent.
#
# Usage: scripts/k8s-local.sh [--dry-run]
#   --dry-run   print every command instead of running it
# Settings (environment): MINIKUBE_PROFILE (comments), as for scripts/provision-k8s.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=false
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=true ;;
    -h | --help) sed -n '2,/^set -euo pipefail$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

PROFILE=${MINIKUBE_PROFILE:-comments}
NS=comments-local
IMAGE=comments-api:dev

run() {
  if $DRY_RUN; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
step() { printf '\n== %s\n' "$*"; }

# Checked before the build: found missing after it (minutes later), a tool or a stopped
# cluster was bash's "command not found", or kubectl's connection error, half way through.
if ! $DRY_RUN; then
  absent=()
  for tool in make minikube kubectl openssl; do
    command -v "$tool" >/dev/null || absent+=("$tool")
  done
  if [ "${#absent[@]}" -gt 0 ]; then
    echo "missing: ${absent[*]} (see docs/deployment.md, Local)" >&2
    exit 1
  fi
  if ! kubectl --context "$PROFILE" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    echo "no cluster answers on kubectl context $PROFILE (MINIKUBE_PROFILE): run scripts/provision-k8s.sh first" >&2
    exit 1
  fi
fi

step "image $IMAGE -> minikube $PROFILE"
run make image IMAGE="$IMAGE"
run minikube image load "$IMAGE" -p "$PROFILE" --overwrite

step "namespace and Secrets (created once)"
# Secret values reach kubectl as files (--from-file=KEY=<(printf ...); printf is a builtin):
# as --from-literal they were on its command line, which every local user can read in the
# process list while it runs.
run kubectl --context "$PROFILE" apply -f deploy/k8s/overlays/local/namespace.yaml
if $DRY_RUN; then
  echo "+ kubectl --context $PROFILE -n $NS create secret generic comments-db-credentials --type=kubernetes.io/basic-auth --from-literal=username=app --from-file=password=<(<random>)"
  echo "+ kubectl --context $PROFILE -n $NS create secret generic comments-api --from-file=database-url=<(postgresql+psycopg://app:<same>@comments-db-rw:5432/app) --from-file=client-ip-hash-salt=<(<random>)"
  echo "+ kubectl --context $PROFILE -n $NS create secret generic comments-redis --from-file=redis.conf=<(requirepass <random>) --from-file=url=<(redis://:<same>@comments-redis:6379/0)"
elif ! kubectl --context "$PROFILE" -n "$NS" get secret comments-api >/dev/null 2>&1; then
  if kubectl --context "$PROFILE" -n "$NS" get secret comments-db-credentials >/dev/null 2>&1; then
    # A run stopped between the two Secrets: the database may already use this password,
    # and creating the Secret again would fail (AlreadyExists) on every later run.
    password=$(kubectl --context "$PROFILE" -n "$NS" get secret comments-db-credentials -o jsonpath='{.data.password}' | base64 -d)
    [ -n "$password" ] || { echo "comments-db-credentials in $NS has no password" >&2; exit 1; }
  else
    password=$(openssl rand -hex 24)
    kubectl --context "$PROFILE" -n "$NS" create secret generic comments-db-credentials --type=kubernetes.io/basic-auth \
      --from-literal=username=app --from-file=password=<(printf '%s' "$password")
  fi
  salt=$(openssl rand -hex 32)
  kubectl --context "$PROFILE" -n "$NS" create secret generic comments-api \
    --from-file=database-url=<(printf '%s' "postgresql+psycopg://app:${password}@comments-db-rw:5432/app") \
    --from-file=client-ip-hash-salt=<(printf '%s' "$salt")
elif ! kubectl --context "$PROFILE" -n "$NS" get secret comments-db-credentials >/dev/null 2>&1; then
  # The other half missing: the password is the one comments-api's URL carries.
  password=$(kubectl --context "$PROFILE" -n "$NS" get secret comments-api -o jsonpath='{.data.database-url}' | base64 -d |
    sed -n 's#^[^:]*://app:\([^@]*\)@.*#\1#p')
  [ -n "$password" ] || { echo "no app password in the database-url of comments-api in $NS" >&2; exit 1; }
  kubectl --context "$PROFILE" -n "$NS" create secret generic comments-db-credentials --type=kubernetes.io/basic-auth \
    --from-literal=username=app --from-file=password=<(printf '%s' "$password")
fi
if ! $DRY_RUN && ! kubectl --context "$PROFILE" -n "$NS" get secret comments-redis >/dev/null 2>&1; then
  redis_password=$(openssl rand -hex 24)
  kubectl --context "$PROFILE" -n "$NS" create secret generic comments-redis \
    --from-file=redis.conf=<(printf '%s' "requirepass ${redis_password}") \
    --from-file=url=<(printf '%s' "redis://:${redis_password}@comments-redis:6379/0")
fi

step "apply the local overlay, migrate, roll out"
# A Job's pod template is immutable: the previous migration Job goes first.
run kubectl --context "$PROFILE" -n "$NS" delete job comments-api-migrate --ignore-not-found --wait=true
run kubectl --context "$PROFILE" apply -k deploy/k8s/overlays/local
run kubectl --context "$PROFILE" -n "$NS" rollout status statefulset/comments-db --timeout=300s
# As long as the Job may run (its activeDeadlineSeconds): it retries while the database starts.
run kubectl --context "$PROFILE" -n "$NS" wait --for=condition=complete job/comments-api-migrate --timeout=600s
# Same tag, new build: restart so the pods run the image just loaded.
run kubectl --context "$PROFILE" -n "$NS" rollout restart deployment/comments-api
run kubectl --context "$PROFILE" -n "$NS" rollout status deployment/comments-api --timeout=300s

step "done"
echo "Try it: kubectl --context $PROFILE -n $NS port-forward service/comments-api 8080:80, then deploy/k8s/e2e/walkthrough.sh http://127.0.0.1:8080"
