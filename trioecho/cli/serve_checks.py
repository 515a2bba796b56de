"""``serve``'s checks of options that go together (or do not), in the
order the command line makes them: the first mistake found is the one
reported (``parser.error``).  Each value's own range is its option type's
(``cli/options.py``) or its configuration's."""

from __future__ import annotations

import argparse
import ssl

from trioecho.cli.configs import tls_alpn_of
from trioecho.cli.echo_policy import fit_replies
from trioecho.errors import FramingError
from trioecho.framing.config import FramingConfig
from trioecho.io.readiness import default_readiness
from trioecho.io.tls import server_context, upstream_context, verify_clients
from trioecho.server.accept import ProxyProtocolConfig
from trioecho.services.echo import GREETING, greeting_frame

__all__ = ["check_serve_options", "server_tls_from_args", "upstream_tls_from_args"]


def check_serve_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace, framing: FramingConfig
) -> tuple[FramingConfig, ProxyProtocolConfig | None, ssl.SSLContext | None]:
    """Check ``serve``'s options against each other (``parser.error`` for the
    first mistake); return the framing fitted to the echo's replies, the
    PROXY protocol configuration, and the TLS context loaded from the files.
    Pins ``args.readiness`` to ``$TRIOECHO_READINESS`` (workers get it)."""
    if args.max_frame is not None and args.max_frame < len(GREETING):
        parser.error(f"--max-frame must be at least {len(GREETING)}: the greeting must fit")
    framing = fit_replies(parser, args, framing)
    try:
        greeting_frame(framing.new_framer())
    except FramingError as exc:
        parser.error(f"the greeting cannot be framed with these options: {exc}")
    try:
        proxy = ProxyProtocolConfig.from_options(
            args.proxy_protocol, args.proxy_allow_from, args.proxy_timeout
        )
    except ValueError as exc:
        parser.error(f"--proxy-allow-from: {exc}")
    if args.proxy_allow_from is not None and proxy is None:
        parser.error("--proxy-allow-from needs --proxy-protocol v1, v2 or auto")
    if args.reuse_port and args.workers == 1:
        parser.error("--reuse-port is for --workers N: one process opens one socket")
    if args.reuse_port and args.uds is not None:
        parser.error("--reuse-port is for TCP ports, not --uds")
    if args.uds is not None and args.proxy_allow_from is not None:
        parser.error(
            "--proxy-allow-from is for TCP peers: on a unix socket (--uds) every peer may "
            "send PROXY headers, the socket file's mode decides who connects"
        )
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if args.readiness is None:
        try:
            args.readiness = default_readiness()
        except ValueError as exc:  # a bad $TRIOECHO_READINESS
            parser.error(str(exc))
    return framing, proxy, server_tls_from_args(parser, args)


def server_tls_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> ssl.SSLContext | None:
    """The server's TLS context (``serve``, ``relay``: ``--tls-*``), with
    the ALPN protocols its command names (:func:`tls_alpn_of`), or None
    without ``--tls-cert``; a usage error names the flag at fault."""
    verify = args.tls_verify_client
    if (args.tls_client_ca or verify != "none") and not args.tls_cert:
        flag = "--tls-client-ca" if args.tls_client_ca else "--tls-verify-client"
        parser.error(f"{flag} needs --tls-cert")
    if args.tls_client_ca and verify == "none":
        parser.error("--tls-client-ca needs --tls-verify-client optional or required")
    if verify != "none" and not args.tls_client_ca:
        parser.error(
            f"--tls-verify-client {verify} needs --tls-client-ca FILE: the CA certificates "
            "client certificates must chain to"
        )
    if not args.tls_cert:
        return None
    try:
        context = server_context(args.tls_cert, args.tls_key)
    except OSError as exc:
        files = f"{args.tls_cert}" + (f" or {args.tls_key}" if args.tls_key else "")
        parser.error(f"--tls-cert: cannot read {files}: {exc.strerror or exc}")
    except ValueError as exc:  # what the files hold
        parser.error(f"--tls-cert: {exc}")
    try:
        verify_clients(context, args.tls_client_ca, verify)
    except OSError as exc:
        parser.error(f"--tls-client-ca: cannot read {args.tls_client_ca}: {exc.strerror or exc}")
    except ValueError as exc:
        parser.error(f"--tls-client-ca: {exc}")
    if tls_alpn_of(args):
        context.set_alpn_protocols(list(tls_alpn_of(args)))
    return context


def upstream_tls_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> ssl.SSLContext | None:
    """``relay``'s context towards its upstream (``--upstream-tls*``), or
    None for ``disable``; a usage error names the flag at fault."""
    mode = args.upstream_tls
    if mode == "disable":
        for flag in ("ca", "cert", "key", "server_name"):
            if getattr(args, f"upstream_tls_{flag}") is not None:
                name = "--upstream-tls-" + flag.replace("_", "-")
                parser.error(f"{name} needs --upstream-tls require, verify-ca or verify-full")
        return None
    if args.upstream_tls_key and not args.upstream_tls_cert:
        parser.error("--upstream-tls-key needs --upstream-tls-cert")
    try:
        return upstream_context(
            mode,
            args.upstream_tls_ca,
            certfile=args.upstream_tls_cert,
            keyfile=args.upstream_tls_key,
        )
    except OSError as exc:
        files = [args.upstream_tls_ca, args.upstream_tls_cert, args.upstream_tls_key]
        named = " or ".join(file for file in files if file)
        parser.error(f"--upstream-tls: cannot read {named}: {exc.strerror or exc}")
    except ValueError as exc:
        parser.error(f"--upstream-tls: {exc}")
