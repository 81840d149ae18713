#!/usr/bin/env bash
# Provisions a local 3-node Kubernetes cluster for comments-api (docs/deployment.md):
#   minikube (3 nodes, Calico so NetworkPolicies are enforced, simulated zones),
#   addons metrics-server and ingress, kube-prometheus-stack, prometheus-adapter, the
#   CloudNativePG operator with its Barman Cloud backup plugin (and cert-manager, which the
#   plugin needs) through Helm (with persistent volumes), and the namespaces.
# Idempotent: run it again at any time; every step converges instead of recreating.
#
# Usage: scripts/provision-k8s.sh [--dry-run]
#   --dry-run   print every command instead of running it (needs none of the tools)
# Settings (environment): MINIKUBE_PROFILE (comments), NODES (3), CPUS (2), MEMORY (4096),
#   KUBERNETES_VERSION (v1.33.1), MINIKUBE_DRIVER (docker).
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
NODES=${NODES:-3}
CPUS=${CPUS:-2}
MEMORY=${MEMORY:-4096}
KUBERNETES_VERSION=${KUBERNETES_VERSION:-v1.33.1}
DRIVER=${MINIKUBE_DRIVER:-docker}
# Chart versions are pinned; renovate.json keeps them current through these comments.
# renovate: datasource=helm depName=kube-prometheus-stack registryUrl=https://prometheus-community.github.io/helm-charts
KPS_CHART_VERSION=88.5.3
# renovate: datasource=helm depName=prometheus-adapter registryUrl=https://prometheus-community.github.io/helm-charts
ADAPTER_CHART_VERSION=5.3.0
# renovate: datasource=helm depName=cloudnative-pg registryUrl=https://cloudnative-pg.github.io/charts
CNPG_CHART_VERSION=0.29.0
# renovate: datasource=helm depName=plugin-barman-cloud registryUrl=https://cloudnative-pg.github.io/charts
BARMAN_PLUGIN_CHART_VERSION=0.7.0
# renovate: datasource=helm depName=cert-manager registryUrl=https://charts.jetstack.io
CERT_MANAGER_CHART_VERSION=v1.18.2
ZONES=(zone-a zone-b zone-c)

step() { printf '\n== %s\n' "$*"; }
# Runs a command, or prints it (shell-quoted, ready to paste) under --dry-run.
run() {
  if $DRY_RUN; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

if ! $DRY_RUN; then
  for tool in minikube kubectl helm openssl; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (see docs/deployment.md, Local)" >&2; exit 1; }
  done
fi

step "cluster: minikube profile $PROFILE, $NODES nodes"
if ! $DRY_RUN && minikube status -p "$PROFILE" >/dev/null 2>&1; then
  echo "already running"
else
  run minikube start -p "$PROFILE" --nodes "$NODES" --cpus "$CPUS" --memory "$MEMORY" \
    --driver "$DRIVER" --kubernetes-version "$KUBERNETES_VERSION" --cni calico
fi
run minikube profile "$PROFILE"

step "simulated zones (production spreads over topology.kubernetes.io/zone)"
for i in $(seq 1 "$NODES"); do
  node=$PROFILE
  [ "$i" -eq 1 ] || node=$(printf '%s-m%02d' "$PROFILE" "$i")
  run kubectl --context "$PROFILE" label node "$node" "topology.kubernetes.io/zone=${ZONES[$(((i - 1) % ${#ZONES[@]}))]}" --overwrite
done

step "addons"
run minikube addons enable metrics-server -p "$PROFILE"
run minikube addons enable ingress -p "$PROFILE"

step "Helm repositories"
run helm repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update
run helm repo add cnpg https://cloudnative-pg.github.io/charts --force-update
run helm repo add jetstack https://charts.jetstack.io --force-update
run helm repo update prometheus-community cnpg jetstack

step "monitoring: kube-prometheus-stack $KPS_CHART_VERSION (Prometheus, Alertmanager, Grafana)"
if $DRY_RUN; then
  echo "+ kubectl --context $PROFILE apply -f - <<< \"\$(kubectl --context $PROFILE create namespace monitoring --dry-run=client -o yaml)\""
  echo "+ kubectl --context $PROFILE -n monitoring create secret generic grafana-admin --from-literal=admin-user=admin --from-literal=admin-password=<random, created once>"
else
  kubectl --context "$PROFILE" create namespace monitoring --dry-run=client -o yaml | kubectl --context "$PROFILE" apply -f -
  # Created once: re-running must not change the password under a running Grafana.
  if ! kubectl --context "$PROFILE" -n monitoring get secret grafana-admin >/dev/null 2>&1; then
    kubectl --context "$PROFILE" -n monitoring create secret generic grafana-admin --from-literal=admin-user=admin \
      --from-literal=admin-password="$(openssl rand -hex 24)"
  fi
fi
run helm --kube-context "$PROFILE" upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --version "$KPS_CHART_VERSION" --namespace monitoring \
  --values deploy/k8s/provision/kube-prometheus-stack-values.yaml --wait --timeout 15m
run helm --kube-context "$PROFILE" upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \
  --version "$ADAPTER_CHART_VERSION" --namespace monitoring \
  --values deploy/k8s/components/hpa-worker-saturation/prometheus-adapter-values.yaml --wait --timeout 10m

step "PostgreSQL operator: CloudNativePG $CNPG_CHART_VERSION, Barman Cloud plugin $BARMAN_PLUGIN_CHART_VERSION"
# cert-manager issues the certificates between the operator and the backup plugin.
run helm --kube-context "$PROFILE" upgrade --install cert-manager jetstack/cert-manager --version "$CERT_MANAGER_CHART_VERSION" \
  --namespace cert-manager --create-namespace --set crds.enabled=true --wait --timeout 10m
run helm --kube-context "$PROFILE" upgrade --install cnpg cnpg/cloudnative-pg --version "$CNPG_CHART_VERSION" \
  --namespace cnpg-system --create-namespace --wait --timeout 10m
run helm --kube-context "$PROFILE" upgrade --install plugin-barman-cloud cnpg/plugin-barman-cloud \
  --version "$BARMAN_PLUGIN_CHART_VERSION" --namespace cnpg-system --wait --timeout 10m

step "namespaces (Pod Security Standards: restricted)"
for env in local staging production; do
  run kubectl --context "$PROFILE" apply -f "deploy/k8s/overlays/$env/namespace.yaml"
done

step "done"
cat <<MSG
Cluster "$PROFILE" is ready. Next (docs/deployment.md):
  create the Secrets of the namespace you deploy (section "Secrets"), then
  kubectl --context $PROFILE apply -k deploy/k8s/overlays/local
Grafana admin password: kubectl --context $PROFILE -n monitoring get secret grafana-admin -o jsonpath='{.data.admin-password}' | base64 -d
MSG
