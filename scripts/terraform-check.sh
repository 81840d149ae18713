#!/usr/bin/env bash
# `make terraform-check` (and .ci/run): the Terraform of deploy/terraform/, checked
# offline the way a reviewer would before an apply:
#   fmt -check -> init -backend=false + validate (every module, bootstrap, environment)
#   -> `terraform test` (module unit tests, mocked provider) -> plan of bootstrap, staging
#   and production with dummy credentials -> `terraform show -json` -> pytest on the plans
#   (tests/terraform, marker `terraform`) -> checkov.
#
# The hashicorp/aws provider comes from the filesystem mirror of the machine image (no
# registry access needed); nothing talks to AWS. Plans run on a copy of the tree with an
# override file (local backend, provider skip flags), so the committed configuration
# carries no test switches.
#
#   scripts/terraform-check.sh               everything
#   scripts/terraform-check.sh --plans DIR   only write DIR/plan-<root>.json (the pytest
#                                            fixture uses this when run on its own)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

TF_DIR=deploy/terraform
ARTIFACTS=${ARTIFACTS:-artifacts/terraform}
# Relative to the repository, or absolute (joined to ROOT it was /work/x//tmp/...).
[[ $ARTIFACTS == /* ]] || ARTIFACTS=$ROOT/$ARTIFACTS
CHECKOV_VENV=${CHECKOV_VENV:-/opt/checkov-venv}
CHECKOV_VERSION=${CHECKOV_VERSION:-3.3.30}
PLAN_ROOTS=(bootstrap environments/staging environments/production)
start=$(date +%s)
step() { printf '\n== terraform: %s (%ss)\n' "$*" "$(($(date +%s) - start))"; }

plans_only=""
if [ "${1:-}" = "--plans" ]; then
  plans_only=${2:?--plans needs a directory}
  mkdir -p "$plans_only"
  plans_only=$(cd "$plans_only" && pwd)
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--plans DIR]" >&2
  exit 2
fi

# --- tools ---------------------------------------------------------------------------
command -v terraform >/dev/null || {
  echo "terraform not found: it is preinstalled on this machine image (/usr/local/bin/terraform);" >&2
  echo "elsewhere install Terraform >= 1.10 from HashiCorp's apt repository" >&2
  exit 1
}
# The provider mirror: TF_PLUGIN_MIRROR, or the image's tf-plugins directory.
mirror=${TF_PLUGIN_MIRROR:-}
if [ -z "$mirror" ]; then
  for candidate in /opt/tf-plugins /usr/local/share/tf-plugins /usr/share/tf-plugins; do
    if [ -d "$candidate/registry.terraform.io/hashicorp/aws" ]; then mirror=$candidate; break; fi
  done
fi
if [ -z "$mirror" ]; then
  mirror=$(find / -xdev -type d -name tf-plugins -path '*tf-plugins' 2>/dev/null | head -n 1 || true)
fi
if [ -z "$mirror" ] || [ ! -d "$mirror/registry.terraform.io/hashicorp/aws" ]; then
  echo "no filesystem mirror of hashicorp/aws found (set TF_PLUGIN_MIRROR)" >&2
  exit 1
fi

mkdir -p "$ARTIFACTS"
work=$(mktemp -d "${TMPDIR:-/tmp}/terraform-check.XXXXXX")
# shellcheck disable=SC2329 # called by the EXIT trap
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM # so the EXIT trap cleans up on a signal too

# Only the mirror, never a registry: an unmirrored provider fails init instead of
# reaching for the network.
cat >"$work/cli.tfrc" <<CFG
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/*/*"]
  }
}
CFG
export TF_CLI_CONFIG_FILE=$work/cli.tfrc
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
# Terraform and the provider are Go; most of a run is the provider building its schema.
# Collecting garbage less often cut a `validate` from 2.3-3.0 to 1.8 CPU-seconds (measured
# here) for about 40 MB more memory per process.
export GOGC=${GOGC:-400}
# Dummy credentials: with the skip flags below the provider never uses them.
export AWS_ACCESS_KEY_ID=AKIAOFFLINEPLANONLY00 AWS_SECRET_ACCESS_KEY=offline-plan-only-not-a-secret
export AWS_EC2_METADATA_DISABLED=true AWS_SDK_LOAD_CONFIG=0
unset AWS_PROFILE AWS_SESSION_TOKEN
echo "terraform $(terraform version | head -n 1 | cut -d' ' -f2), provider mirror $mirror"

# A copy of the tree without local .terraform dirs: init, overrides and state stay out
# of the working tree.
tar -C "$TF_DIR" --exclude=.terraform --exclude=.terraform.lock.hcl --exclude='*.tfstate*' \
  --exclude=zz_offline_override.tf -cf - . | (mkdir -p "$work/tf" && tar -C "$work/tf" -xf -)
tf() { terraform -chdir="$work/tf/$1" "${@:2}"; }

# Run "$1 ITEM" for every ITEM, JOBS at a time (each terraform run spends most of its
# time starting the 700 MB provider), then print each job's log in order; fails if any
# job failed.
JOBS=${TF_CHECK_JOBS:-4}
parallel() {
  local fn=$1 i=0 failed=0 running=0
  shift
  local items=("$@") pids=()
  for item in "${items[@]}"; do
    if [ "$running" -ge "$JOBS" ]; then wait -n || true; running=$((running - 1)); fi
    "$fn" "$item" >"$work/job-$fn-$i.log" 2>&1 &
    pids+=($!)
    running=$((running + 1))
    i=$((i + 1))
  done
  for i in "${!items[@]}"; do
    wait "${pids[$i]}" || failed=1
    cat "$work/job-$fn-$i.log"
  done
  return "$failed"
}

validate_one() {
  tf "$1" init -backend=false -input=false -no-color >"$work/init-${1//\//_}.log" 2>&1 ||
    { cat "$work/init-${1//\//_}.log"; return 1; }
  tf "$1" validate -no-color | grep -v '^$' | sed "s|^|$1: |"
}

test_one() {
  local log=$work/test-${1//\//_}.log
  tf "$1" test -no-color >"$log" 2>&1 || { cat "$log"; return 1; }
  echo "$1: $(grep -E '^(Success|Failure)!' "$log")"
}

plan_root() { # $1 = root dir (relative to deploy/terraform), $2 = output dir
  local dir=$1 out=$2 name
  name=$(basename "$dir")
  cat >"$work/tf/$dir/zz_offline_override.tf" <<OVR
# Written by scripts/terraform-check.sh for the offline plan only.
terraform {
  backend "local" {
    path = "$work/state-$name.tfstate"
  }
}

provider "aws" {
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  # Needs the account ID the skip above avoids fetching; the root's account variable
  # is still validated and used in every ARN.
  allowed_account_ids = null
}
OVR
  tf "$dir" init -input=false -reconfigure -no-color >"$work/init-$name.log" 2>&1 ||
    { cat "$work/init-$name.log" >&2; return 1; }
  tf "$dir" plan -input=false -lock=false -no-color -out="$work/$name.tfplan" >"$out/plan-$name.txt" 2>&1 ||
    { cat "$out/plan-$name.txt" >&2; return 1; }
  tf "$dir" show -json "$work/$name.tfplan" >"$out/plan-$name.json"
  grep -E '^Plan:' "$out/plan-$name.txt" | sed "s/^/$name: /"
}

plan_out=$ARTIFACTS
[ -z "$plans_only" ] || plan_out=$plans_only
plan_one() { plan_root "$1" "$plan_out"; }

if [ -n "$plans_only" ]; then
  parallel plan_one "${PLAN_ROOTS[@]}"
  exit 0
fi

step "fmt -check -recursive"
terraform fmt -check -recursive -diff "$TF_DIR"
echo "formatted"

step "init -backend=false + validate (modules, bootstrap, environments)"
mapfile -t roots < <(cd "$work/tf" && find modules bootstrap environments -name '*.tf' -printf '%h\n' | sort -u)
parallel validate_one "${roots[@]}"

step "terraform test (module unit tests, mocked provider)"
mapfile -t tested < <(cd "$work/tf" && find modules -name '*.tftest.hcl' -printf '%h\n' | sed 's|/tests$||' | sort -u)
modules=$(find "$work/tf/modules" -mindepth 1 -maxdepth 1 -type d | wc -l)
[ "${#tested[@]}" -eq "$modules" ] || { echo "only ${#tested[@]} of $modules modules have tests" >&2; exit 1; }
parallel test_one "${tested[@]}"

step "plan (dummy credentials, skip flags) + show -json -> $ARTIFACTS"
parallel plan_one "${PLAN_ROOTS[@]}"

step "plan tests (pytest -m terraform)"
TF_PLAN_DIR="$ARTIFACTS" .venv/bin/pytest -q -p no:cacheprovider -m terraform tests/terraform

step "checkov (terraform, offline)"
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
fi
"$CHECKOV_VENV/bin/checkov" --config-file "$TF_DIR/.checkov.yaml" -d "$TF_DIR"

step "done"
