# Installs the Debian packages the test suite needs, when they are missing.
# Sourced by scripts/test.sh (and the benchmark scripts).

# Packages needed, as "command:package" pairs. Store issues add theirs here.
# A "command" with a slash is a path (a glob) that must exist instead: Debian
# keeps PostgreSQL's server binaries off PATH, in /usr/lib/postgresql/<version>/bin.
SESSIONKIT_PACKAGES=(
    "awk:gawk"
    "redis-server:redis-server"
    "redis-cli:redis-tools"
    "memcached:memcached"
    "curl:curl"
    "/usr/lib/postgresql/*/bin/initdb:postgresql"
    "chromium:chromium"
    "chromedriver:chromium-driver"
)

ensure_packages() {
    local missing=()
    local pair cmd pkg
    for pair in "${SESSIONKIT_PACKAGES[@]}"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if [[ "${cmd}" == */* ]]; then
            compgen -G "${cmd}" >/dev/null || missing+=("${pkg}")
        else
            command -v "${cmd}" >/dev/null 2>&1 || missing+=("${pkg}")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        printf '==> installing %s\n' "${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        ${sudo} apt-get update -qq
        DEBIAN_FRONTEND=noninteractive ${sudo} apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
