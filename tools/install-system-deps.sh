#!/bin/sh
# System packages the test suite needs besides Python and a C compiler:
# haproxy, for tests/test_haproxy.py (trioecho behind a real load balancer).
# Does nothing if they are installed; otherwise installs them with apt-get
# (through sudo when not root).
set -eu
if command -v haproxy > /dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
    exit 0
fi
if ! command -v apt-get > /dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install haproxy (>= 2.0) with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "install-system-deps: installing haproxy with apt-get" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy > /dev/null
