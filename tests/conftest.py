"""Shared fixtures.  Framer tests take ``impl`` and so run against both the C
framer and its pure-Python twin in every test run."""

from __future__ import annotations

import ssl

import pytest
import trustme

from trioecho import _backend


@pytest.fixture(params=_backend.IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
