#!/usr/bin/env bash
# What owners cost (issue 15), on every store with an owner index, side by
# side in one run: each store's `owner_costs` measurement (an ignored test
# that runs `sessionkit_core::testkit::owners::costs`, the same sequence on
# every store), built in release, one store after the other, against the
# servers the test harness starts on free loopback ports (PostgreSQL with
# fsync off, Redis without persistence: the store's own cost, not the
# disk's; the file store's writes are durable, as by default). Prints one
# markdown table of medians in µs (see BENCHMARKS.md).
#
# Usage: bench/owner-costs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/lib/install.sh
ensure_packages

export CARGO_INCREMENTAL=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT
run() {
    cargo test --release "$@" owner_costs -- --ignored --nocapture --test-threads 1 \
        | grep -ao 'owner cost.*' >>"$out"
}
run -p sessionkit-core --features testkit --test owners
run -p sessionkit-file --test owners
run -p sessionkit-sql --all-features --test sqlite
run -p sessionkit-sql --all-features --test postgres
run -p sessionkit-redis --test standalone

python3 - "$out" <<'PY'
import sys
rows, stores = {}, []
for line in open(sys.argv[1]):
    _, store, what, us = line.rstrip("\n").split("\t")
    if store not in stores:
        stores.append(store)
    rows.setdefault(what, {})[store] = int(us)
print("| operation (µs, median) | " + " | ".join(stores) + " |")
print("|---|" + "--:|" * len(stores))
for what, by_store in rows.items():
    print(f"| {what} | " + " | ".join(f"{by_store.get(s, '—'):,}" for s in stores) + " |")
PY
