"""ServerConfig: every MessageServer setting in one checked, frozen value."""

from __future__ import annotations

import dataclasses
import inspect
import pickle

import pytest

from trioecho import FramingConfig, KeepAlive, MessageServer, ServerConfig
from trioecho.services.echo import EchoHandler


def test_the_config_has_exactly_the_servers_keywords_with_the_same_defaults() -> None:
    keywords = {
        name: parameter.default
        for name, parameter in inspect.signature(MessageServer.__init__).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = {field.name: field.default for field in dataclasses.fields(ServerConfig)}
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
