#!/usr/bin/env bash
# Runs the relay core's tests with the C core built under AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

runtime=$(gcc -print-file-name=libasan.so)
if [[ ! -e "$runtime" ]]; then
    echo "asan: gcc has no libasan.so here; install libasan (Debian: libgcc-12-dev)" >&2
    exit 1
fi
export CARGO_TARGET_DIR=target/asan RELAY_CORE_SANITIZE=address
# The test binaries are Rust-linked, so the ASan runtime is preloaded instead of linked
# first; leak checking is off because the Rust test harness keeps allocations to exit.
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test -q -p relay-core --no-run --message-format=json >"$json"
mapfile -t bins < <(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' "$json")
if [[ ${#bins[@]} -eq 0 ]]; then
    echo "asan: no test binaries were built" >&2
    exit 1
fi
for bin in "${bins[@]}"; do
    echo "asan: $(basename "$bin")"
    LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 "$bin" -q
done
