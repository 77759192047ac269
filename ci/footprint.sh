#!/usr/bin/env bash
# Prints the relay core's footprint on the ESP8266's lx106: code, static data, and RAM per relay;
# then, apart, that of provisioning (provision.c), which runs once at boot before the relay.
#
#   ci/footprint.sh [--clients N] [--line N] [--txq N] [--uartq N] [--max-ram BYTES]
#
# Each option overrides the compile-time bound of the same name in firmware/core/relay.h.
# --max-ram fails (exit 1) when one relay instance needs more RAM than BYTES.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${XTENSA_CC:-xtensa-lx106-elf-gcc}
size=${XTENSA_SIZE:-xtensa-lx106-elf-size}

defs=() max_ram=""
while [[ $# -gt 0 ]]; do
    case $1 in -h | --help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;; esac
    [[ $# -ge 2 ]] || { echo "footprint: $1 needs a value (see --help)" >&2; exit 2; }
    case $1 in
    --clients) defs+=("-DRELAY_MAX_CLIENTS=$2") ;;
    --line) defs+=("-DRELAY_MAX_LINE=$2") ;;
    --txq) defs+=("-DRELAY_TXQ_SIZE=$2") ;;
    --uartq) defs+=("-DRELAY_UARTQ_SIZE=$2") ;;
    --max-ram) max_ram=$2 ;;
    *) echo "footprint: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done

if ! command -v "$cc" >/dev/null; then
    echo "footprint: $cc not found; install it with: apt-get install gcc-xtensa-lx106" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(-std=c11 -Os -mlongcalls -ffreestanding -Wall -Wextra -Werror -I "$root/firmware/core")

# The core objects, and one statically allocated relay_t as a sketch declares it.
"$cc" "${flags[@]}" "${defs[@]}" -c "$root/firmware/core/relay.c" -o "$work/relay.o"
"$cc" "${flags[@]}" "${defs[@]}" -c "$root/firmware/core/provision.c" -o "$work/provision.o"
printf '#include "provision.h"\nrelay_provision_t request;\n' >"$work/request.c"
"$cc" "${flags[@]}" "${defs[@]}" -c "$work/request.c" -o "$work/request.o"
printf '#include "relay.h"\nrelay_t relay_instance;\n' >"$work/instance.c"
printf '#include "relay.h"\nstruct relay_client one_slot;\n' >"$work/slot.c"
"$cc" "${flags[@]}" "${defs[@]}" -c "$work/instance.c" -o "$work/instance.o"
"$cc" "${flags[@]}" "${defs[@]}" -c "$work/slot.c" -o "$work/slot.o"

read -r text data bss < <("$size" "$work/relay.o" | awk 'NR==2 {print $1, $2, $3}')
read -r ram < <("$size" "$work/instance.o" | awk 'NR==2 {print $3}')
read -r slot < <("$size" "$work/slot.o" | awk 'NR==2 {print $3}')
read -r ptext pdata pbss < <("$size" "$work/provision.o" | awk 'NR==2 {print $1, $2, $3}')
read -r request < <("$size" "$work/request.o" | awk 'NR==2 {print $3}')
limits=$(printf '#include "relay.h"\nRELAY_MAX_CLIENTS RELAY_MAX_LINE RELAY_TXQ_SIZE RELAY_UARTQ_SIZE\n' |
    "$cc" "${flags[@]}" "${defs[@]}" -E -P - | tail -n 1)
read -r clients line txq uartq <<<"$limits"

printf 'relay core %s on the ESP8266 (lx106), %s -Os -mlongcalls\n' \
    "$(sed -n 's/^#define RELAY_VERSION "\(.*\)"/\1/p' "$root/firmware/core/relay.h")" \
    "$("$cc" -dumpversion)"
printf 'bounds: clients=%s max_line=%s txq=%s uartq=%s\n' "$clients" "$line" "$txq" "$uartq"
printf '  %-10s %7s  %s\n' .text "$text" "code (flash)" .data "$data" "initialised RAM" \
    .bss "$bss" "zeroed RAM (the core keeps no static state)" \
    relay_t "$ram" "RAM of one relay instance (the sketch's static .bss)"
printf '  %-10s %7s  %s\n' per-client "$slot" \
    "RAM each slot adds (line buffer, queue, counters)"
printf 'provisioning (provision.c), once at boot, before the relay starts\n'
printf '  %-10s %7s  %s\n' .text "$ptext" "code (flash)" .data "$pdata" "initialised RAM" \
    .bss "$pbss" "zeroed RAM" request "$request" "RAM of the request being received (boot stack)"

if [[ -n "$max_ram" && "$ram" -gt "$max_ram" ]]; then
    echo "footprint: a relay instance needs $ram bytes of RAM, over the budget of $max_ram" >&2
    exit 1
fi
