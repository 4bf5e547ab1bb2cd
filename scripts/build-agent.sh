#!/usr/bin/env bash
# Builds kiln-agent as a stripped static binary (static-pie, glibc linked in), the form
# bind-mounted into every sandbox, and prints its path.
#
#   scripts/build-agent.sh            # release build
#   PROFILE=dev scripts/build-agent.sh
set -euo pipefail

cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
target=x86_64-unknown-linux-gnu
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")"

RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=symbols" \
    cargo build --quiet -p kiln-agent --target "$target" --profile "$profile"

dir="$profile"
[ "$profile" = dev ] && dir=debug
bin="$target_dir/$target/$dir/kiln-agent"

# Refuse to hand out a binary that would need the sandbox's libc.
if command -v ldd >/dev/null && ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "error: $bin is dynamically linked:" >&2
    ldd "$bin" >&2
    exit 1
fi
echo "$bin"
