#!/usr/bin/env bash
# Make `prometheus` and `promtool` available for the ops tests (Debian package `prometheus`).
# Idempotent: does nothing when both are already on PATH. Exits non-zero, saying why, when they
# cannot be installed (no apt, not root, no network); `make test` carries on and the Prometheus
# tests skip with that reason rather than failing the whole run.
set -u

have() { command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; }

if have; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: apt-get is not available; install the Prometheus server and promtool by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install-prometheus: not root and no password-less sudo; run: apt-get install -y prometheus" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The package's service is never started here (containers have no init; CI needs only the binaries).
install() { $SUDO apt-get install -y --no-install-recommends prometheus >"$log" 2>&1; }
echo "install-prometheus: apt-get install -y prometheus" >&2
if ! install; then
    # A stale or empty package index is the usual cause: refresh it once, then try again.
    echo "install-prometheus: install failed; running apt-get update and retrying" >&2
    if ! $SUDO apt-get update >"$log" 2>&1 || ! install; then
        echo "install-prometheus: could not install the Debian package 'prometheus':" >&2
        tail -n 5 "$log" >&2
        exit 1
    fi
fi
if ! have; then
    echo "install-prometheus: package installed but prometheus/promtool are not on PATH" >&2
    exit 1
fi
echo "install-prometheus: $(prometheus --version 2>&1 | head -n 1)" >&2
