#!/usr/bin/env bash
# Soak: the shop binary under mixed load for a bounded time, on the memory
# store and on Redis, with 100k sessions and continuous expiry (a one-minute
# session lifetime). Reports RSS over time, errors and lost locked
# increments (see reliability/src/bin/soak.rs). Not run by scripts/test.sh.
#
# Usage: scripts/soak.sh [seconds per store] [memory|redis ...]
#   default 300 s, both stores. Output: target/soak/<store>.txt
#   SOAK_SESSIONS (default 100000), SOAK_CONCURRENCY (default 64).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
shift || true
stores=("$@")
if [ "${#stores[@]}" -eq 0 ]; then
    stores=(memory redis)
fi

source scripts/lib/install.sh
ensure_packages

cargo build --release -q -p shop -p reliability --bin shop --bin soak
out=target/soak
mkdir -p "$out"

pids=()
tmp=$(mktemp -d)
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the shop with the given environment; sets shop_pid and shop_url.
start_shop() {
    local log=$tmp/shop-$RANDOM.out
    env SHOP_ADDR=127.0.0.1:0 RUST_LOG=warn SESSION_LIFETIME=1 "$@" \
        target/release/shop >"$log" 2>"$log.err" &
    shop_pid=$!
    pids+=("$shop_pid")
    for _ in $(seq 100); do
        if grep -q '^listening on ' "$log" 2>/dev/null; then
            shop_url=$(sed -n 's/^listening on //p' "$log" | head -1)
            return
        fi
        sleep 0.1
    done
    echo "the shop did not start:" >&2
    cat "$log.err" >&2
    exit 1
}

status=0
for store in "${stores[@]}"; do
    store_pid=()
    case "$store" in
        memory)
            start_shop SESSION_DRIVER=memory
            ;;
        redis)
            port=$(free_port)
            mkdir -p "$tmp/redis"
            redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
                --dir "$tmp/redis" --daemonize no >"$tmp/redis.log" 2>&1 &
            redis_pid=$!
            pids+=("$redis_pid")
            for _ in $(seq 100); do
                redis-cli -p "$port" ping >/dev/null 2>&1 && break
                sleep 0.1
            done
            store_pid=(--store-pid "$redis_pid")
            start_shop SESSION_DRIVER=redis SESSION_REDIS_URL="redis://127.0.0.1:$port"
            ;;
        *)
            echo "unknown store $store (memory, redis)" >&2
            exit 2
            ;;
    esac
    echo "==> soak on $store for ${seconds} s (shop pid $shop_pid at $shop_url)"
    if ! target/release/soak --url "$shop_url" --pid "$shop_pid" "${store_pid[@]}" \
        --seconds "$seconds" --sessions "${SOAK_SESSIONS:-100000}" \
        --concurrency "${SOAK_CONCURRENCY:-64}" 2>"$out/$store.err" | tee "$out/$store.txt"; then
        status=1
        tail -20 "$out/$store.err"
    fi
    if [ "$store" = redis ]; then
        echo "redis keys at the end: $(redis-cli -p "$port" dbsize)" | tee -a "$out/$store.txt"
    fi
    kill -9 "$shop_pid" 2>/dev/null || true
    [ "$store" = redis ] && kill -9 "$redis_pid" 2>/dev/null || true
done
exit "$status"
