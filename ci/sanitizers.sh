#!/usr/bin/env bash
# Runs the relay core's tests with the C core built under AddressSanitizer, then under
# UndefinedBehaviorSanitizer, each in its own target dir (target/asan, target/ubsan). Any report
# aborts its test binary, and so fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

asan_runtime=$(gcc -print-file-name=libasan.so)
for lib in libasan.so libubsan.so; do
    if [[ ! -e $(gcc -print-file-name=$lib) ]]; then
        echo "sanitizers: gcc has no $lib here; install it (Debian: libgcc-12-dev)" >&2
        exit 1
    fi
done

json=$(mktemp)
trap 'rm -f "$json"' EXIT

# run NAME SANITIZER [ENV=VALUE...]: builds relay-core's tests with RELAY_CORE_SANITIZE set to
# SANITIZER into target/NAME and runs each test binary with the given environment.
run() {
    local name=$1 san=$2
    shift 2
    CARGO_TARGET_DIR=target/$name RELAY_CORE_SANITIZE=$san \
        cargo test -q -p relay-core --no-run --message-format=json >"$json"
    mapfile -t bins < <(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])' "$json")
    if [[ ${#bins[@]} -eq 0 ]]; then
        echo "sanitizers: no test binaries were built for $name" >&2
        exit 1
    fi
    for bin in "${bins[@]}"; do
        echo "$name: $(basename "$bin")"
        env "$@" "$bin" -q
    done
}

# The test binaries are Rust-linked, so the ASan runtime is preloaded instead of linked first;
# leak checking is off because the Rust test harness keeps allocations to exit.
run asan address LD_PRELOAD="$asan_runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
# UBSan's runtime is linked (build.rs); the core is built with -fno-sanitize-recover=all.
run ubsan undefined UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
