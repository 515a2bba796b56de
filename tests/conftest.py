"""Shared fixtures, and the tiers.

Framer tests take ``impl`` and so run against both the C framer and its
pure-Python twin in every test run.

Every test carries its file's tier marker (``pytest -m unit``, ...):

* ``unit``: sans-IO code, no I/O at all;
* ``stream``: in-process streams (Trio's memory streams, socket pairs);
* ``loopback``: in-process servers and clients on loopback;
* ``process``: real server processes (``python -m trioecho``);
* ``daemon``: external daemons (HAProxy, PostgreSQL, mosquitto);

and ``cunit`` marks the tests that exercise a C unit (the framer, the echo
session, the pump, the load generator): CI runs them under AddressSanitizer and
UndefinedBehaviorSanitizer.  A new test file must be listed in ``TIERS``.
"""

from __future__ import annotations

import ssl
from typing import cast

import pytest
import trustme

from trioecho import _backend
from trioecho._backend import Implementation

TIERS = {
    "test_framing_length.py": ("unit", "cunit"),
    "test_framing_line.py": ("unit", "cunit"),
    "test_framing_fields.py": ("unit", "cunit"),
    "test_framing_differential.py": ("unit", "cunit"),
    "test_proxy.py": ("unit",),
    "test_config.py": ("unit",),
    "test_layers.py": ("unit",),
    "test_supervisor.py": ("unit",),
    "test_cli_options.py": ("unit",),
    "test_framing_names.py": ("loopback",),
    "test_mistakes.py": ("loopback",),
    "test_testing.py": ("stream", "cunit"),
    "test_session.py": ("unit", "cunit"),
    "test_hub.py": ("stream",),
    "test_pump.py": ("stream", "cunit"),
    "test_pump_relay.py": ("stream", "cunit"),
    "test_pump_respond.py": ("stream", "cunit"),
    "test_stream.py": ("stream",),
    "test_send_rule.py": ("stream",),
    "test_transport.py": ("stream",),
    "test_accept.py": ("loopback",),
    "test_tls_socket.py": ("loopback",),
    "test_refusing.py": ("loopback",),
    "test_echo.py": ("loopback",),
    "test_load.py": ("loopback",),
    "test_relay.py": ("loopback",),
    "test_relay_sizes.py": ("loopback",),
    "test_keepalive.py": ("loopback",),
    "test_relay_streaming.py": ("process",),
    "test_server.py": ("loopback",),
    "test_misbehaving_handlers.py": ("loopback",),
    "test_bench.py": ("process", "cunit"),
    "test_cli.py": ("process",),
    "test_connect.py": ("loopback",),
    "test_defects.py": ("loopback",),
    "test_examples.py": ("process",),
    "test_docs_snippets.py": ("process",),
    "test_hostile.py": ("process",),
    "test_slow_readers.py": ("process",),
    "test_inline.py": ("loopback",),
    "test_memory.py": ("process",),
    "test_shutdown.py": ("process",),
    "test_sizes.py": ("loopback",),
    "test_workers.py": ("process",),
    "test_typing.py": ("process",),
    "test_signals.py": ("process",),
    "test_reload.py": ("process",),
    "test_systemd.py": ("process",),
    "test_metrics.py": ("process",),
    "test_logs.py": ("process",),
    "test_relay_limits.py": ("process",),
    "test_relay_endings.py": ("process",),
    "test_unix.py": ("loopback",),
    "test_dead_peers.py": ("process",),
    "test_client_certificates.py": ("process",),
    "test_haproxy.py": ("daemon",),
    "test_hosts.py": ("daemon",),
    "test_deploy.py": ("daemon",),
    "test_live_protocols.py": ("daemon",),
    "test_relay_tls.py": ("daemon",),
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets its file's tier markers; a file with no tier is an error."""
    for item in items:
        name = item.path.name
        if name not in TIERS:
            raise pytest.UsageError(f"{name} has no tier: add it to TIERS in tests/conftest.py")
        for marker in TIERS[name]:
            item.add_marker(marker)


@pytest.fixture(params=_backend.IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Implementation:
    return cast(Implementation, request.param)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throwaway CA; its ``localhost``/``127.0.0.1`` certificate serves the tests."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    return tls_ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture
def server_ssl_context(tls_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_server_cert.configure_cert(context)
    return context


@pytest.fixture
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def tls_files(
    tmp_path_factory: pytest.TempPathFactory, tls_ca: trustme.CA, tls_server_cert: trustme.LeafCert
) -> dict[str, str]:
    """PEM files for the command line: ``cert``, ``key`` (the server's) and ``ca``."""
    directory = tmp_path_factory.mktemp("tls")
    files = {name: str(directory / f"{name}.pem") for name in ("cert", "key", "ca")}
    tls_server_cert.cert_chain_pems[0].write_to_path(files["cert"])
    tls_server_cert.private_key_pem.write_to_path(files["key"])
    tls_ca.cert_pem.write_to_path(files["ca"])
    return files
