#!/bin/sh
# Services and the HTTP layer speak to sandboxes only through the backend-neutral
# interface of kiln-runtime: no local-backend names in their sources.
set -eu
cd "$(dirname "$0")/.."
if grep -rnE 'kiln_runtime::local|LocalConfig|LocalRuntime|check_host|RootLayers|BindMount|init_pid|kiln_runtime::docker|DockerRuntime|DockerSettings' \
    crates/kiln-services/src crates/kiln-api/src; then
    echo "kiln-services / kiln-api name the local sandbox backend (above)" >&2
    exit 1
fi
echo "runtime interface: services and api are backend-neutral"
