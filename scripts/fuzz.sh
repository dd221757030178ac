#!/usr/bin/env bash
# Runs every libFuzzer target of fuzz/ for a while each (cargo-fuzz, on the
# stable toolchain through RUSTC_BOOTSTRAP=1), installing cargo-fuzz when it
# is missing. Fails when a target finds a crash; the input is left under
# fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [seconds per target] [target...]
#   default 30 s each, all targets. Logs go to target/fuzz-logs/<target>.log;
#   the last line of each ("Done N runs in S second(s)") is printed.
#   FUZZ_JOBS=2 runs two targets at a time (default 1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-30}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(cookie_header decode_record config_lookup)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Release optimizations with debug assertions and overflow checks on.
cargo fuzz build -O -a

logs=../target/fuzz-logs
mkdir -p "$logs"

run() {
    local target=$1
    mkdir -p "corpus/$target"
    # The seeds are the starting corpus; new inputs go to corpus/ (ignored by
    # git). Memory limits make an allocation driven by a forged length fail.
    if cargo fuzz run -O -a "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=128 \
        -max_len=131072 -print_final_stats=1 >"$logs/$target.log" 2>&1; then
        printf '%-16s ok:   %s\n' "$target" "$(grep -E '^Done [0-9]+ runs' "$logs/$target.log" | tail -1)"
    else
        printf '%-16s FAIL: see %s and fuzz/artifacts/%s/\n' "$target" "$logs/$target.log" "$target"
        tail -40 "$logs/$target.log"
        return 1
    fi
}

status=0
jobs=${FUZZ_JOBS:-1}
pids=()
for target in "${targets[@]}"; do
    run "$target" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || status=1
        pids=("${pids[@]:1}")
    fi
done
for pid in "${pids[@]}"; do
    wait "$pid" || status=1
done
exit "$status"
