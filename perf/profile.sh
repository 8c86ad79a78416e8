#!/usr/bin/env bash
# A CPU profile of one load run as a flamegraph: perf record (call graphs) of the release
# binary, folded and drawn with the `inferno` crate (installed with cargo if missing).
# Usage: perf/profile.sh OUT.svg [load arguments...]
#   e.g. perf/profile.sh target/produce.svg produce --messages 10000000 --partitions 10000
# Needs perf (apt-get install linux-perf) and kernel.perf_event_paranoid <= 1 or root.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: perf/profile.sh OUT.svg [load arguments...]}
shift
[[ $# -gt 0 ]] || set -- produce --messages 5000000
command -v perf >/dev/null || { apt-get update >/dev/null && apt-get install -y linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --quiet
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet
data=$(mktemp ./target/profile-XXXXXX.data)
trap 'rm -f "$data"' EXIT
perf record -F 999 -g -o "$data" ./target/release/floodgate load "$@" >&2
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
  --title "floodgate load $*" > "$out"
echo "flamegraph: $out" >&2
