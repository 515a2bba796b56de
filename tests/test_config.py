"""ServerConfig and RelayConfig: every setting of a server or a relay in one
checked, frozen value."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from trioecho import FramingConfig, KeepAlive, MessageServer, RelayConfig, ServerConfig, make_framer
from trioecho.services.echo import EchoHandler
from trioecho.services.relay import relay_server, relay_server_from_config


def test_the_config_has_exactly_the_servers_keywords_with_the_same_defaults() -> None:
    keywords = {
        name: parameter.default
        for name, parameter in inspect.signature(MessageServer.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = {field.name: field.default for field in dataclasses.fields(ServerConfig)}
    assert keywords == fields


def test_the_relay_config_has_exactly_relay_servers_keywords_with_the_same_defaults() -> None:
    keywords = {
        name: parameter.default
        for name, parameter in inspect.signature(relay_server).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = {field.name: field.default for field in dataclasses.fields(RelayConfig)}
    del fields["upstream"], fields["listener"]  # the first argument; the other keywords
    # The framings are required (no default) unless a RelayConfig comes alone.
    assert fields.pop("client_framing") is fields.pop("server_framing") is dataclasses.MISSING
    assert keywords.pop("client_framing") is keywords.pop("server_framing") is None
    assert keywords == fields


def test_values_are_stored_in_their_checked_form() -> None:
    config = ServerConfig(host="", framing="len", keepalive="30:5:3", grace=2)
    assert config.host is None
    assert config.framing == FramingConfig("len")
    assert config.framing_config is config.framing
    assert config.keepalive == KeepAlive(30, 5, 3)
    assert config.grace == 2.0 and type(config.grace) is float


def test_a_config_is_frozen_and_pickles_without_tls() -> None:
    config = ServerConfig(framing="len", port=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"port": "9999"}, TypeError, "port must be an int from 0 to 65535, not '9999'"),
        (
            {"unix_path": "x", "reuse_port": True},
            ValueError,
            "reuse_port is for TCP ports, not unix_path",
        ),
        ({"grace": -1}, ValueError, "grace must be a number of seconds, at least 0, not -1"),
        ({"max_connections": 0}, ValueError, "max_connections must be at least 1, not 0"),
        ({"readiness": "poll"}, ValueError, "readiness must be hub, trio or None, not 'poll'"),
    ],
)
def test_the_config_refuses_what_the_server_refuses(
    settings: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as from_config:
        ServerConfig(**settings)  # type: ignore[arg-type]
    with pytest.raises(error) as from_keywords:
        MessageServer(EchoHandler, **settings)  # type: ignore[arg-type]
    assert str(from_config.value) == str(from_keywords.value) == message


def test_replace_checks_again() -> None:
    config = ServerConfig()
    assert config.replace(port=0).port == 0
    with pytest.raises(ValueError, match="max_connections must be at least 1, not 0"):
        config.replace(max_connections=0)


def test_a_server_from_a_config_has_its_settings_and_a_budget_of_its_own() -> None:
    config = ServerConfig(framing="len", port=0, memory_budget=1 << 20)
    first = MessageServer.from_config(EchoHandler, config)
    second = MessageServer.from_config(EchoHandler, config)
    assert first.config is config
    assert first.framing == FramingConfig("len")
    assert first.budget is not second.budget and first.budget.limit == 1 << 20
    with pytest.raises(TypeError, match="config must be a ServerConfig, not dict"):
        MessageServer.from_config(EchoHandler, {"port": 0})  # type: ignore[arg-type]


def test_a_server_takes_its_config_positionally_or_keywords_not_both() -> None:
    config = ServerConfig(framing="len", port=0)
    server = MessageServer(EchoHandler, config)
    assert server.config is config and server.port == 0
    # Keywords at their defaults beside it are no settings: nothing is lost.
    assert MessageServer(EchoHandler, config, port=9999).config is config
    with pytest.raises(TypeError) as both:
        MessageServer(EchoHandler, config, port=7000, grace=1.0)
    assert str(both.value) == (
        "MessageServer takes a ServerConfig or keyword settings, not both: port, grace "
        "given with the config (use config.replace(...))"
    )
    with pytest.raises(TypeError, match="config must be a ServerConfig, not dict"):
        MessageServer(EchoHandler, {"port": 0})  # type: ignore[arg-type]


def test_a_relay_server_takes_a_relay_config_alone() -> None:
    config = RelayConfig("127.0.0.1:5432", "len", "len", listener=ServerConfig(port=0))
    server = relay_server(config)
    assert server.config == config.listening
    with pytest.raises(TypeError) as both:
        relay_server(config, idle_timeout=5.0, port=7000)
    assert str(both.value) == (
        "relay_server() takes a RelayConfig alone, not with idle_timeout, port"
    )
    with pytest.raises(TypeError) as missing:
        relay_server("127.0.0.1:5432", client_framing="len")
    assert str(missing.value) == (
        "relay_server() needs client_framing and server_framing (or a RelayConfig alone)"
    )


def test_a_relay_config_keeps_its_checked_forms_and_serves_its_listener() -> None:
    listener = ServerConfig(port=0, max_connections=7)
    config = RelayConfig("127.0.0.1:5432", "len", "len", keepalive=None, listener=listener)
    assert config.upstream == ("127.0.0.1", 5432)
    assert config.client_framing == FramingConfig("len")
    listening = config.listening
    assert (listening.max_connections, listening.idle_timeout, listening.keepalive) == (
        7,
        None,
        None,
    )
    assert listening.send_timeout == config.send_timeout
    server = relay_server_from_config(config)
    assert server.config == listening and server.framing == FramingConfig("len")
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"connect_timeout": -1}, ValueError, "connect_timeout must be"),
        ({"half_close": 1}, TypeError, "half_close must be True or False, not 1"),
        (
            {"answer": bytes, "answer_factory": bytes},
            ValueError,
            "give answer or answer_factory, not both",
        ),
    ],
)
def test_the_relay_config_refuses_what_relay_server_refuses(
    settings: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as from_config:
        RelayConfig("127.0.0.1:5432", "len", "len", **settings)  # type: ignore[arg-type]
    with pytest.raises(error) as from_keywords:
        relay_server("127.0.0.1:5432", client_framing="len", server_framing="len", **settings)  # type: ignore[arg-type]
    assert str(from_config.value) == str(from_keywords.value)
    assert str(from_config.value).startswith(message)


def test_the_relays_own_listener_settings_are_refused_where_they_would_be_lost() -> None:
    with pytest.raises(ValueError, match=r"listener\.idle_timeout is the relay's own setting"):
        RelayConfig("127.0.0.1:5432", "len", "len", listener=ServerConfig(idle_timeout=5))
    with pytest.raises(TypeError, match="relay_server\\(\\) sets framing itself"):
        relay_server("127.0.0.1:5432", client_framing="len", server_framing="len", framing="line")


@pytest.mark.parametrize(
    ("framing", "option", "message"),
    [
        ("line", {"length_bytes": 2}, "length_bytes applies to framing len, not 'line'"),
        ("len", {"delimiter": b"\r\n"}, "delimiter applies to framing line, not 'len'"),
        ("raw", {"max_frame": 10}, "max_frame applies to framing line or len or varint, not 'raw'"),
        ("len", {"frame_size": 8}, "frame_size applies to framing fixed, not 'len'"),
    ],
)
def test_an_option_that_does_not_apply_to_the_framing_is_refused(
    framing: str, option: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        make_framer(framing, **option)  # type: ignore[arg-type]
    assert str(refused.value) == message
    with pytest.raises(ValueError, match=message):
        FramingConfig(framing, **option)  # type: ignore[arg-type]


def test_an_option_at_its_default_is_taken_for_any_framing() -> None:
    assert make_framer("line", length_bytes=4, delimiter=(b"\n",)) is not None
    assert FramingConfig("len", strip_cr=True, on_too_long="error").framing == "len"
