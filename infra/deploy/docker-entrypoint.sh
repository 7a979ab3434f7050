#!/bin/sh
# Secrets arrive as files (compose `secrets:` under /run/secrets) named after the
# variable they set, e.g. /run/secrets/MODELBUS_KAFKA__SASL_PASSWORD. Settings read
# only the environment, so each such file becomes a variable here, just before the
# command starts; nothing is echoed. Kubernetes passes secrets as env (secretKeyRef /
# envFrom) and has no such files: the loop then does nothing.
set -eu
for f in /run/secrets/MODELBUS_* /run/secrets/AWS_*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    case "$name" in *[!A-Za-z0-9_]*) continue ;; esac
    export "$name=$(cat "$f")"
done
exec "$@"
