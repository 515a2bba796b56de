"""The command line's checks of its options, in-process: ``main(argv)``
exits 2 with the command's usage error (``trioecho serve: error: ...``)
before it serves anything (:mod:`support.cli_inprocess`).  That a real
``python -m trioecho`` exits 2 with it is ``test_cli.py``'s."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli_inprocess import run_main

from trioecho.cli.configs import drain_delay_of
from trioecho.cli.options import build_parser
from trioecho.server.config import DEFAULT_DRAIN_DELAY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--framing", "json"], "invalid choice"),
        (["--port", "70000"], "must be 0..65535"),
        (["--max-frame", "0"], "must be at least 1"),
        (["--max-frame", "10"], "greeting"),
        (
            ["--framing", "len", "--length-bytes", "1", "--max-frame", "253"],
            "--max-frame 253 is too large for --length-bytes 1: the reply to a message "
            "(3 bytes longer) must fit the header, so at most 252",
        ),
        (["--framing", "len", "--length-bytes", "2", "--max-frame", "65533"], "at most 65532"),
        (["--max-connections", "-1"], "must be at least 1"),
        (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
        (
            ["--tls-cert", "/nonexistent.pem"],
            "--tls-cert: cannot read /nonexistent.pem: No such file or directory",
        ),
        (["--proxy-allow-from", "10.0.0.0/8"], "--proxy-allow-from needs --proxy-protocol"),
        (
            ["--proxy-protocol", "v2", "--proxy-allow-from", "10.0.0.0/8,bogus"],
            "not an IP network: 'bogus'",
        ),
        (["--proxy-protocol", "v3"], "invalid choice: 'v3'"),
        (["--proxy-timeout", "0"], "must be more than 0"),
        (["--workers", "0"], "must be at least 1"),
        (["--grace", "-1"], "--grace: must be 0..86400 seconds, not -1"),
        (["--grace", "nan"], "--grace: must be 0..86400 seconds, not nan"),
        (["--send-timeout", "nan"], "--send-timeout: must be 0..86400 seconds, not nan"),
        (
            ["--min-send-rate", "nan"],
            "--min-send-rate: must be a finite number, at least 0, not nan",
        ),
        (["--min-send-rate", "-1"], "--min-send-rate: must be a finite number, at least 0, not -1"),
        (["--min-send-rate", "1k"], "--min-send-rate: must be bytes a second, not '1k'"),
        (["--idle-timeout", "nan"], "--idle-timeout: must be 0..86400 seconds, not nan"),
        (["--idle-timeout", "inf"], "--idle-timeout: must be 0..86400 seconds, not inf"),
        (["--proxy-timeout", "nan"], "--proxy-timeout: must be 0..86400 seconds, not nan"),
        (["--tls-handshake-timeout", "-3"], "must be 0..86400 seconds, not -3"),
        (["--grace", "soon"], "--grace: must be a number of seconds, not 'soon'"),
        (["--drain-delay", "-1"], "--drain-delay: must be 0..86400 seconds, not -1"),
        (["--drain-delay", "nan"], "--drain-delay: must be 0..86400 seconds, not nan"),
        (["relay", "--upstream", "h:1", "--drain-delay", "x"], "--drain-delay: must be a number"),
        (["bench", "--duration", "0"], "--duration: must be more than 0, not 0"),
        (["bench", "--warmup", "nan"], "--warmup: must be 0..86400 seconds, not nan"),
        (["--workers", "many"], "--workers: must be a number or 'auto', not 'many'"),
        (["--readiness", "select"], "invalid choice: 'select'"),
        (["--framing", "fixed"], "--framing fixed needs --frame-size"),
        (
            ["--framing", "fixed", "--frame-size", "4"],
            "the echo service cannot answer fixed-length messages",
        ),
        (["--framing", "len", "--length-offset", "1"], "--length-offset needs --include-header"),
        (["--framing", "varint", "--varint-bytes", "11"], "between 1 and 10"),
        (
            ["--framing", "varint", "--varint-bytes", "1", "--max-frame", "125"],
            "--max-frame 125 is too large for --varint-bytes 1: the reply to a message "
            "(3 bytes longer) must fit the header, so at most 124",
        ),
        (
            ["--framing", "len", "--length-bytes", "1", "--length-adjustment", "20"],
            "the greeting cannot be framed with these options",
        ),
        (["--delimiter", ""], "a delimiter is 1 to 8 bytes, not 0"),
        (["--delimiter", "\\x"], "bad delimiter"),
        (["--delimiter", "x"] * 9, "give 1 to 8 delimiters, not 9"),
        (["--length-offset", "70000"], "between 0 and 65535"),
        (["client", "--framing", "len", "--include-header"], "the client sends bare payloads"),
        (["bench", "--framing", "varint"], "invalid choice: 'varint'"),
        (["relay"], "the following arguments are required: --upstream"),
        (["relay", "--upstream", "nowhere"], "expected HOST:PORT, not 'nowhere'"),
        (["relay", "--upstream", "[]:80"], "expected HOST:PORT, not '[]:80'"),
        (["relay", "--upstream", "db:abc"], "argument --upstream: not a port number: 'abc'"),
        (["relay", "--upstream", "db:70000"], "argument --upstream: must be 0..65535, not 70000"),
        (["relay", "--connect-timeout", "-1", "--upstream", "db:1"], "--connect-timeout: must be"),
        (["relay", "--upstream", "h:1", "--preset", "x"], "invalid choice: 'x'"),
    ],
)
def test_bad_options_exit_2(options: list[str], message: str) -> None:
    outcome = run_main(options)
    assert outcome.code == 2
    assert message in outcome.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--workers", "2", "--reuse-port"], "--reuse-port is for TCP ports, not --uds"),
        (
            ["--proxy-protocol", "v1", "--proxy-allow-from", "10.0.0.0/8"],
            "--proxy-allow-from is for TCP peers: on a unix socket (--uds) every peer may send "
            "PROXY headers, the socket file's mode decides who connects",
        ),
        (["--uds-mode", "9"], "argument --uds-mode: not an octal file mode: '9'"),
    ],
)
def test_uds_option_mistakes(options: list[str], message: str, tmp_path: Path) -> None:
    outcome = run_main(["serve", "--uds", str(tmp_path / "s"), *options])
    assert outcome.code == 2
    assert outcome.last_error_line == f"trioecho serve: error: {message}"


@pytest.mark.parametrize(
    ("options", "drain_delay"),
    [
        ([], 0.0),  # nothing can see /readyz: no delay
        (["--metrics", "9100"], DEFAULT_DRAIN_DELAY),
        (["--metrics", "9100", "--drain-delay", "0"], 0.0),
        (["--drain-delay", "2.5"], 2.5),
        (["relay", "--upstream", "db:5432", "--metrics", "9100"], DEFAULT_DRAIN_DELAY),
    ],
)
def test_the_drain_delay_defaults_to_7_s_only_where_readyz_can_be_seen(
    options: list[str], drain_delay: float
) -> None:
    command = options[0] if options[:1] == ["relay"] else "serve"
    args = build_parser().parse_args(options if command == "relay" else ["serve", *options])
    assert drain_delay_of(args) == drain_delay
    assert DEFAULT_DRAIN_DELAY == 7.0  # fall 3 x inter 2 s, HAProxy's defaults, and 1 s more


# serve with a certificate, requiring client certificates from the CA file given after.
REQUIRED = ["--tls-cert", "{cert}", "--tls-key", "{key}"]
REQUIRED += ["--tls-verify-client", "required", "--tls-client-ca"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tls-verify-client", "required"], "--tls-verify-client needs --tls-cert"),
        (["--tls-client-ca", "{ca}"], "--tls-client-ca needs --tls-cert"),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{ca}"],
            "--tls-client-ca needs --tls-verify-client optional or required",
        ),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-verify-client", "optional"],
            "--tls-verify-client optional needs --tls-client-ca FILE: the CA certificates "
            "client certificates must chain to",
        ),
        (
            [*REQUIRED, "/nonexistent.pem"],
            "--tls-client-ca: cannot read /nonexistent.pem: No such file or directory",
        ),
        ([*REQUIRED, "{key}"], "--tls-client-ca: {key} holds no PEM CA certificate: "),
        (["--tls-verify-client", "maybe"], "argument --tls-verify-client: invalid choice"),
        (["client", "--tls-key", "{key}"], "--tls-key needs --tls-cert"),
        (
            ["client", "--tls-cert", "/nonexistent.pem"],
            "--tls-cert: cannot read /nonexistent.pem: No such file or directory",
        ),
        (["bench", "--tls-cert", "{key}"], "--tls-cert: {key} holds no PEM certificate"),
    ],
)
def test_client_certificate_option_mistakes(
    options: list[str], message: str, tls_files: dict[str, str]
) -> None:
    outcome = run_main([option.format(**tls_files) for option in options])
    assert outcome.code == 2
    assert message.format(**tls_files) in outcome.stderr, outcome.stderr


RELAY = ["relay", "--upstream", "db:5432"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--upstream-tls-ca", "{ca}"], "--upstream-tls-ca needs --upstream-tls require, "),
        (["--upstream-tls-server-name", "db"], "--upstream-tls-server-name needs --upstream-tls"),
        (
            ["--upstream-tls", "require", "--upstream-tls-key", "{key}"],
            "--upstream-tls-key needs --upstream-tls-cert",
        ),
        (
            ["--upstream-tls", "verify-full", "--upstream-tls-ca", "/nonexistent.pem"],
            "--upstream-tls: cannot read /nonexistent.pem: No such file or directory",
        ),
        (
            ["--upstream-tls", "verify-ca", "--upstream-tls-cert", "{key}"],
            "--upstream-tls: {key} holds no PEM certificate",
        ),
        (["--upstream-tls", "prefer"], "argument --upstream-tls: invalid choice: 'prefer'"),
        (["--tls-verify-client", "required"], "--tls-verify-client needs --tls-cert"),
    ],
)
def test_relay_tls_option_mistakes(
    options: list[str], message: str, tls_files: dict[str, str]
) -> None:
    outcome = run_main([*RELAY, *(option.format(**tls_files) for option in options)])
    assert outcome.code == 2
    assert message.format(**tls_files) in outcome.stderr, outcome.stderr
