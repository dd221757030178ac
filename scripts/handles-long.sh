#!/usr/bin/env bash
# The long run of the Session-handle state-machine test
# (reliability/tests/handles.rs): every store for a bounded time, cases run
# in batches until the time is up; prints the case count per store. Not run
# by scripts/test.sh (which runs 24 cases per store).
#
# Usage: scripts/handles-long.sh [seconds per store] [store filter ...]
#   default 600 s; filters: memory, file, redis_store, redis_cluster,
#   memcached, postgres, sqlite (default all). The stores run at the same
#   time (each test mostly waits on its store and on 20 ms lock waits).
#   Output: target/handles-long.txt
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
filters=("$@")
if [ "${#filters[@]}" -eq 0 ]; then
    filters=(memory file redis_store redis_cluster memcached postgres sqlite)
fi

source scripts/lib/install.sh
ensure_packages

mkdir -p target/handles-long
out=target/handles-long.txt
: > "$out"
cargo test --release -p reliability --test handles --no-run
for filter in "${filters[@]}"; do
    HANDLES_SECONDS="$seconds" PROPTEST_CASES=100 \
        cargo test --release -p reliability --test handles "$filter" -- --nocapture \
        > "target/handles-long/$filter.log" 2>&1 &
done
status=0
wait || status=$?
for filter in "${filters[@]}"; do
    grep -E "cases in|test result|panicked|Test failed" "target/handles-long/$filter.log" | tee -a "$out"
done
exit "$status"
