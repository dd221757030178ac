#!/usr/bin/env bash
# Runs the load benchmark of sessionkit against bare axum and tower-sessions
# (and, on actix-web, against bare actix-web and actix-session; on SQL,
# against tower-sessions-sqlx-store) and prints one table (see
# BENCHMARKS.md). Builds in release mode, installs redis-server/memcached/
# PostgreSQL when missing, starts its own on free loopback ports (PostgreSQL
# with its durable defaults: fsync and synchronous_commit on),
# starts one server per variant and scenario, and stops everything it
# started by PID. Sends traffic to 127.0.0.1 only.
#
# Usage: bench/run.sh
# Environment:
#   BENCH_DURATION   measured seconds of each run of scenarios a, b, d
#                    (default 5)
#   BENCH_ROUNDS     runs of scenarios a, b, d per variant, the variants
#                    taking turns; the table shows the best run (default 3)
#   BENCH_WARMUP     unmeasured seconds before each run (default 1)
#   BENCH_VARIANTS   space-separated variants (default: every one built;
#                    see target/release/bench-server --list)
#   BENCH_SCENARIOS  space-separated subset of: a b c-incr c-locked d r e s
#                    (s: PostgreSQL statements per request, counted by the
#                    server with pg_stat_statements, and table bytes per
#                    idle session; written to statements.md)
#   BENCH_PG_POOL    connection pool size of both PostgreSQL variants
#                    (default: each one's own, 10 for both)
#   BENCH_OUT        directory for results.jsonl and table.md
#                    (default target/bench)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

step() { printf '\n==> %s\n' "$*" >&2; }

source scripts/lib/install.sh
ensure_packages

step "cargo build --release -p bench --bins"
cargo build --release -p bench --bins
bin="${CARGO_TARGET_DIR:-target}/release"

duration=${BENCH_DURATION:-5}
rounds=${BENCH_ROUNDS:-3}
warmup=${BENCH_WARMUP:-1}
variants=${BENCH_VARIANTS:-$("${bin}/bench-server" --list | tr '\n' ' ')}
scenarios=${BENCH_SCENARIOS:-a b c-incr c-locked d r e s}
out=${BENCH_OUT:-target/bench}
mkdir -p "${out}"
results="${out}/results.jsonl"
: >"${results}"
work=$(mktemp -d "${TMPDIR:-/tmp}/sessionkit-bench.XXXXXX")

# Every process this script starts, stopped by PID on exit.
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "${pid}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "${pid}" 2>/dev/null || true
    done
    rm -rf "${work}"
}
trap cleanup EXIT

needs() { # variant backend
    case "$1" in
        *-redis) [ "$2" = redis ] ;;
        *-memcached) [ "$2" = memcached ] ;;
        *-postgres) [ "$2" = postgres ] ;;
        *) false ;;
    esac
}

uses_any() { # backend
    local v
    for v in ${variants}; do
        needs "${v}" "$1" && return 0
    done
    return 1
}

wait_for() { # description command...
    local what=$1
    shift
    for _ in $(seq 200); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.05
    done
    echo "error: ${what} did not come up" >&2
    exit 1
}

redis_port=""
if uses_any redis; then
    redis_port=$("${bin}/bench-load" free-port)
    redis-server --port "${redis_port}" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --logfile "${work}/redis.log" &
    pids+=($!)
    wait_for "redis-server" redis-cli -p "${redis_port}" ping
fi
memcached_port=""
if uses_any memcached; then
    memcached_port=$("${bin}/bench-load" free-port)
    # memcached refuses to run as root unless told which user to be.
    as_user=()
    [ "$(id -u)" -ne 0 ] || as_user=(-u root)
    memcached -l 127.0.0.1 -p "${memcached_port}" -U 0 -m 2048 -t 2 "${as_user[@]}" &
    pids+=($!)
    wait_for "memcached" bash -c "exec 3<>/dev/tcp/127.0.0.1/${memcached_port}"
fi

pg_port=""
pg_bin=""
psql_() { # sql
    "${pg_bin}/psql" -X -q -t -A -h 127.0.0.1 -p "${pg_port}" -U postgres -d postgres -c "$1"
}
if uses_any postgres; then
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    pg_port=$("${bin}/bench-load" free-port)
    mkdir -p "${work}/pg"
    # PostgreSQL refuses to run as root: then it runs as `postgres`.
    as_pg=()
    if [ "$(id -u)" -eq 0 ]; then
        # mktemp's directory is private to root; postgres must get through.
        chmod 755 "${work}"
        chown postgres:postgres "${work}/pg"
        as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    "${as_pg[@]}" "${pg_bin}/initdb" -D "${work}/pg/data" -U postgres -A trust -E UTF8 \
        --locale=C >"${work}/pg/initdb.log" 2>&1
    # The server's durable defaults (fsync, synchronous_commit on); room for
    # the pools of a server and the load; pg_stat_statements for scenario s.
    "${as_pg[@]}" "${pg_bin}/postgres" -D "${work}/pg/data" -p "${pg_port}" -h 127.0.0.1 \
        -k "${work}/pg" -c max_connections=100 \
        -c shared_preload_libraries=pg_stat_statements >"${work}/pg/postgres.log" 2>&1 &
    pids+=($!)
    wait_for "postgres" "${pg_bin}/pg_isready" -q -h 127.0.0.1 -p "${pg_port}"
    psql_ "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
fi

server_pid=""
server_addr=""
start_server() { # variant
    : >"${work}/server.out"
    "${bin}/bench-server" --variant "$1" \
        --redis-url "redis://127.0.0.1:${redis_port:-6379}" \
        --memcached-servers "127.0.0.1:${memcached_port:-11211}" \
        --file-path "${work}/files" \
        --postgres-url "postgres://postgres@127.0.0.1:${pg_port:-5432}/postgres" \
        --sqlite-path "${work}/sessions.db" \
        >"${work}/server.out" 2>"${work}/server.err" &
    server_pid=$!
    pids+=("${server_pid}")
    server_addr=""
    for _ in $(seq 200); do
        server_addr=$(sed -n 's#^listening on http://##p' "${work}/server.out")
        [ -n "${server_addr}" ] && return 0
        if ! kill -0 "${server_pid}" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    echo "error: bench-server --variant $1 did not start:" >&2
    cat "${work}/server.err" >&2
    exit 1
}

stop_server() {
    kill "${server_pid}" 2>/dev/null || true
    wait "${server_pid}" 2>/dev/null || true
}

# A clean store for every run: the state of one scenario must not weigh on
# the next.
reset_stores() { # variant
    if needs "$1" redis; then
        redis-cli -p "${redis_port}" flushall >/dev/null
    fi
    if needs "$1" memcached; then
        bash -c "exec 3<>/dev/tcp/127.0.0.1/${memcached_port}; printf 'flush_all\r\n' >&3; read -r -t 5 line <&3"
    fi
    if needs "$1" postgres; then
        psql_ "DROP TABLE IF EXISTS sessions, sessionkit_schema; DROP SCHEMA IF EXISTS tower_sessions CASCADE" >/dev/null 2>&1
    fi
    rm -rf "${work}/files" "${work}"/sessions.db*
}

# Scenario s: what the database server counts. For each route, one session
# (made by a first /incr), then 200 requests one at a time with its cookie;
# pg_stat_statements is reset before them and read after (top-level
# statements, the counting query itself left out). Then 10,000 new sessions
# of one small value (/incr without a cookie) and the table's bytes per row
# (pg_total_relation_size: heap, TOAST and indexes).
statements() { # variant
    local variant=$1 route method n calls table jar
    needs "${variant}" postgres || return 0
    reset_stores "${variant}"
    start_server "${variant}"
    jar="${work}/cookies"
    rm -f "${jar}"
    curl -s -o /dev/null -c "${jar}" -b "${jar}" -X POST "http://${server_addr}/incr"
    for route in /read /incr /incr-locked /plain; do
        method=GET
        case "${route}" in /incr*) method=POST ;; esac
        psql_ "SELECT pg_stat_statements_reset()" >/dev/null
        n=200
        for _ in $(seq "${n}"); do
            curl -s -o /dev/null -c "${jar}" -b "${jar}" -X "${method}" "http://${server_addr}${route}"
        done
        calls=$(psql_ "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
        echo "| ${variant} | ${method} ${route} | $(awk -v c="${calls}" -v n="${n}" 'BEGIN { printf "%.2f", c / n }') |" >>"${out}/statements.md"
    done
    "${bin}/bench-load" run --addr "${server_addr}" --variant "${variant}" --scenario s \
        --no-cookies --concurrency 8 --requests 10000 --mix /incr --out "${work}/s.jsonl" >/dev/null
    case "${variant}" in
        tower-sessions-*) table=tower_sessions.session ;;
        *) table=sessions ;;
    esac
    psql_ "SELECT '| ${variant} | bytes per idle session (' || count(*) || ' rows) | ' || round(pg_total_relation_size('${table}')::numeric / count(*)) || ' |' FROM ${table}" >>"${out}/statements.md"
    stop_server
}

run_scenario() { # scenario variant
    local scenario=$1 variant=$2
    local args=()
    case "${scenario}" in
        a) args=(--users 1000 --concurrency 64 --duration "${duration}" --warmup "${warmup}"
                 --mix /read:90,/incr:10)
           # bare keeps one counter for everybody: nothing to check per user.
           case "${variant}" in bare*) ;; *) args+=(--check) ;; esac ;;
        b) args=(--no-cookies --concurrency 64 --duration "${duration}" --warmup "${warmup}"
                 --mix /incr) ;;
        # One session, 8 in flight: 1 priming increment + 1,999 = 2,000.
        c-incr) args=(--users 1 --concurrency 8 --same-user 8 --requests 1999
                      --mix /incr --check) ;;
        c-locked) args=(--users 1 --concurrency 8 --same-user 8 --requests 1999
                        --mix /incr-locked --check) ;;
        d) args=(--users 1000 --concurrency 64 --duration "${duration}" --warmup "${warmup}"
                 --mix /plain) ;;
        r) # Store commands per read request; only where there is a store.
           needs "${variant}" redis || needs "${variant}" memcached || return 0
           args=(--users 1000 --concurrency 64 --duration 3 --warmup 1 --mix /read --monitor) ;;
    esac
    if needs "${variant}" redis; then
        args+=(--redis-port "${redis_port}")
    elif needs "${variant}" memcached; then
        args+=(--memcached-port "${memcached_port}")
    fi
    reset_stores "${variant}"
    # Let a burst of other work on the machine pass first (bounded).
    case "${scenario}" in
        a | b | d) "${bin}/bench-load" quiet --max 4 ;;
        *) "${bin}/bench-load" quiet --max 1 ;;
    esac
    start_server "${variant}"
    "${bin}/bench-load" run --addr "${server_addr}" --server-pid "${server_pid}" \
        --variant "${variant}" --scenario "${scenario}" --out "${results}" "${args[@]}"
    stop_server
}

step "machine"
{
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "memory: $(free -h | awk '/^Mem:/ {print $2}')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    [ -z "${redis_port}" ] || echo "redis: $(redis-server --version | awk '{print $3}')"
    [ -z "${memcached_port}" ] || echo "memcached: $(memcached -V | awk '{print $2}')"
    [ -z "${pg_port}" ] || echo "postgres: $("${pg_bin}/postgres" --version | awk '{print $3}') (fsync, synchronous_commit on)"
    echo "variants: ${variants}"
    echo "load generator and servers share the cores; nothing is pinned"
} | tee "${out}/machine.txt" >&2

# Scenario by scenario, so that the variants compared in one scenario run
# close together in time; the timed scenarios in rounds, the variants taking
# turns, so that a burst of other work on the machine does not fall on one
# variant only (the report keeps each variant's best run).
for scenario in ${scenarios}; do
    [ "${scenario}" = e ] && continue
    if [ "${scenario}" = s ]; then
        uses_any postgres || continue
        step "scenario s: statements per request and bytes per session on PostgreSQL"
        printf '| variant | request | statements per request |\n|---|---|---|\n' >"${out}/statements.md"
        for variant in ${variants}; do
            statements "${variant}"
        done
        cat "${out}/statements.md" >&2
        continue
    fi
    step "scenario ${scenario}"
    case "${scenario}" in
        a | b | d) n=${rounds} ;;
        # One round of 2,000 increments is short: five, on new sessions.
        c-incr | c-locked) n=5 ;;
        *) n=1 ;;
    esac
    for _ in $(seq "${n}"); do
        for variant in ${variants}; do
            run_scenario "${scenario}" "${variant}"
        done
    done
done

if [[ " ${scenarios} " == *" e "* ]]; then
    step "scenario e: 1M idle sessions in the memory stores"
    "${bin}/bench-load" quiet --max 2
    "${bin}/bench-idle" --store sessionkit --out "${results}"
    "${bin}/bench-idle" --store tower-sessions --out "${results}"
fi

step "results"
"${bin}/bench-load" report "${results}" | tee "${out}/table.md"
elapsed=$(($(date +%s) - started))
printf '\nbench/run.sh took %dm%02ds (results in %s)\n' $((elapsed / 60)) $((elapsed % 60)) "${out}"
