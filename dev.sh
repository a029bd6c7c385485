#!/usr/bin/env bash
# egresswatch developer entry point: the two commands at the top of the README.
#   ./dev.sh run  [egresswatch run options]   set up .venv if needed, run the proxy
#   ./dev.sh test [pytest options]            set up everything the tests need, run the suite
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    local c
    for c in python3.12 python3.13 python3; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return
        fi
    done
    # pyenv installs that are not on the global shim path
    for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
        if [ -x "$c" ]; then echo "$c"; return; fi
    done
    echo "egresswatch needs Python >= 3.12 (mitmproxy 12); none found" >&2
    exit 1
}

venv() {
    local extras="$1" stamp=".venv/.installed-$1"
    if [ ! -x .venv/bin/python ]; then
        "$(find_python)" -m venv .venv
    fi
    # Reinstall when the dependencies or the native extension's sources changed since the last
    # install (an editable install builds addon/egresswatch/_suffixtable.c in place).
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
        || [ addon/egresswatch/_suffixtable.c -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip >/dev/null
        .venv/bin/python -m pip install -q -e ".[$extras]"
        touch "$stamp"
    fi
}

debian_packages() {
    # Real services the suite runs: promtool/prometheus, amtool, PostgreSQL, headless Chromium.
    local need=()
    command -v promtool >/dev/null || need+=(prometheus)
    command -v amtool >/dev/null || need+=(prometheus-alertmanager)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    command -v chromium >/dev/null || need+=(chromium)
    command -v curl >/dev/null || need+=(curl)
    # Transparent / WireGuard end-to-end tests (tests/test_e2e_modes.py): nft, wireguard-go, wg.
    command -v nft >/dev/null || need+=(nftables)
    command -v wireguard-go >/dev/null || need+=(wireguard-go)
    command -v wg >/dev/null || need+=(wireguard-tools)
    if [ ${#need[@]} -gt 0 ]; then
        local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    fi
    # The Debian prometheus package starts a system-wide server on :9090; the tests start their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus prometheus-alertmanager 2>/dev/null || true; fi
}

cmd="${1:-}"; shift || true
case "$cmd" in
    run)
        venv bench  # the proxy, PostgreSQL support and what bench/*.py need
        exec .venv/bin/egresswatch run "$@"
        ;;
    test)
        debian_packages
        venv test
        exec .venv/bin/python -m pytest "$@"
        ;;
    *)
        echo "usage: ./dev.sh run [egresswatch run options] | ./dev.sh test [pytest options]" >&2
        exit 2
        ;;
esac
