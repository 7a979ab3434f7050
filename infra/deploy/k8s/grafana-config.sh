#!/bin/sh
# Grafana's provisioning and dashboards as ConfigMaps, straight from infra/deploy/grafana
# (kustomize cannot read files outside infra/deploy/k8s). Server-side apply: a dashboard
# may exceed the 256 KiB last-applied annotation. Run after the files change:
#   infra/deploy/k8s/grafana-config.sh [namespace]
# Each line of the table: ConfigMap name, directory under infra/deploy/grafana (the
# Deployment in grafana.yaml mounts each ConfigMap where Grafana expects that directory).
set -eu
ns=${1:-modelbus}
root=$(cd "$(dirname "$0")/../grafana" && pwd)
while read -r name dir; do
    kubectl -n "$ns" create configmap "$name" --from-file="$root/$dir" --dry-run=client -o yaml \
        | kubectl -n "$ns" apply --server-side -f -
done <<TABLE
grafana-datasources provisioning/datasources
grafana-dashboard-providers provisioning/dashboards
grafana-dashboards dashboards
TABLE
kubectl -n "$ns" rollout restart deployment/grafana 2>/dev/null || true
