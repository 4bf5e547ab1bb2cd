#!/usr/bin/env bash
# Builds the kiln-demo environment images into an image store, with progress bars.
#
#   images/build-demo.sh [--store DIR] [--cache DIR] [--force] [--mirror URL] [-v]
#
# Needs root (debootstrap, device nodes, overlay xattrs) and a Debian mirror (the host's apt
# mirror is used unless --mirror is given). Installs debootstrap if it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
store="${KILN_IMAGE_STORE:-/var/lib/kiln/images}"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --store) store="$2"; shift 2 ;;
    --store=*) store="${1#--store=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [[ "$(id -u)" != 0 ]]; then
  echo "build-demo.sh: must run as root (debootstrap and layer unpacking need it)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cd "$repo"
exec cargo run --quiet -p kiln-envimage --example build-demo -- \
  --store "$store" --dataset "$repo/datasets/kiln-demo" ${args[@]+"${args[@]}"}
