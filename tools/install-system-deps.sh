#!/bin/sh
# System packages the test suite needs besides Python and a C compiler:
# haproxy, for tests/test_haproxy.py (trioecho behind a real load balancer);
# postgresql and mosquitto (+ mosquitto-clients), for tests/test_live_protocols.py
# (real PostgreSQL and MQTT traffic through a trioecho relay; the tests start
# their own servers in temporary directories: no system service is used);
# systemd, for systemd-socket-activate (tests/test_systemd.py: socket activation
# as systemd does it); prometheus, for promtool (tests/test_metrics.py checks
# the metrics exposition with it); pgbouncer, for benchmarks/relay.py (the
# relay against pgbouncer, in CI as a smoke run); iproute2, for ip and tc
# (tests/test_dead_peers.py: network namespaces joined by a veth pair, one
# side silenced by a qdisc that drops every packet); libssl-dev, OpenSSL's
# headers and libraries, for benchmarks/tls_loadgen.c (the C TLS load generator
# of compare.py's TLS rows, which CI compiles with -Werror and runs as a smoke
# run).
# Installs what is missing with apt-get (through sudo when not root).
set -eu
missing=""
if ! command -v haproxy > /dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
    missing="$missing haproxy"
fi
if ! command -v psql > /dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1; then
    missing="$missing postgresql"
fi
if ! command -v mosquitto > /dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing="$missing mosquitto"
fi
if ! command -v mosquitto_pub > /dev/null 2>&1 || ! command -v mosquitto_sub > /dev/null 2>&1; then
    missing="$missing mosquitto-clients"
fi
if ! command -v systemd-socket-activate > /dev/null 2>&1; then
    missing="$missing systemd"
fi
if ! command -v pgbouncer > /dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    missing="$missing pgbouncer"
fi
if ! command -v promtool > /dev/null 2>&1; then
    missing="$missing prometheus"
fi
if [ ! -f /usr/include/openssl/ssl.h ]; then
    missing="$missing libssl-dev"
fi
for tool in ip tc; do
    if ! command -v $tool > /dev/null 2>&1 && [ ! -x /usr/sbin/$tool ] && [ ! -x /sbin/$tool ]; then
        missing="$missing iproute2"
        break
    fi
done
if [ -z "$missing" ]; then
    exit 0
fi
if ! command -v apt-get > /dev/null 2>&1; then
    echo "install-system-deps: no apt-get here; install$missing with your package manager" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "install-system-deps: installing$missing with apt-get" >&2
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086  # one word per package
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing > /dev/null
