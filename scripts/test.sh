#!/usr/bin/env bash
# Runs every check and test of sessionkit, on a fresh machine too: installs
# what the tests need when it is missing, then runs fmt, clippy, docs and the
# whole test suite. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# One build of everything, not an edit loop: incremental compilation would
# only add about 9 GB of caches to target/ and time to the first build.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# Servers the store tests start for themselves (on free loopback ports).
source scripts/lib/install.sh
ensure_packages

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
# Code behind a feature gate can be dead without it: check the library
# crates with their default features too.
step "cargo clippy (library crates, default features, -D warnings)"
cargo clippy -p sessionkit-core -p sessionkit -p sessionkit-redis \
    -p sessionkit-memcached -p sessionkit-file --lib -- -D warnings
# sessionkit-sql: each database's feature alone leaves the other's code out.
cargo clippy -p sessionkit-sql --lib --features postgres -- -D warnings
cargo clippy -p sessionkit-sql --lib --features sqlite -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --quiet

step "cargo test (workspace, all features)"
mkdir -p target
cargo test --workspace --all-features 2>&1 | tee target/test-output.txt

# One test needs the redis feature *without* redis-tls (what a `rediss://`
# URL says when TLS is not compiled in), which --all-features cannot give.
step "cargo test (sessionkit, features redis without redis-tls)"
cargo test -p sessionkit --features redis --test config_errors 2>&1 | tee -a target/test-output.txt

# The library crates as a user gets them from crates.io: packaged, then
# built from the packages (docs that include files outside a crate, or a
# missing manifest field, fail here). The members that are not libraries
# for users are `publish = false` and left out.
step "cargo package (the published crates)"
# cargo verifies each package against the others' fresh packages, which it
# unpacks under $CARGO_HOME/registry/src/-<hash>/ (a local overlay of
# crates.io); a copy left there by an earlier run of the same version is
# reused as it is, stale; so can a `.crate` left in target/package by a run
# from another checkout, and so can the compiled crates of such a copy
# (cargo fingerprints a registry crate by name and version, not content).
# Remove all three first; on a fresh machine there is nothing to remove.
target_dir=${CARGO_TARGET_DIR:-target}
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/sessionkit{,-core,-file,-memcached,-redis,-sql}-[0-9]*
rm -rf "${target_dir}/package" "${target_dir}"/debug/.fingerprint/sessionkit*
cargo package --workspace --exclude shop --exclude shop-actix --exclude reliability \
    --exclude bench --exclude sessionkit-test-servers --quiet

step "fuzzing (20 s per target; see RELIABILITY.md for the long runs)"
scripts/fuzz.sh 20

# One summary line for whoever reads the end of the log.
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\n%d passed, %d failed\n", p, f }' target/test-output.txt
