"""Connection options: defaults and validation."""

from __future__ import annotations

import pytest

from rue_trio.websocket import ConnectionConfig


def test_config_defaults() -> None:
    config = ConnectionConfig()
    assert (config.ping_interval, config.ping_timeout, config.close_timeout) == (20, 20, 10)
    assert config.inbound_queue == 64
    assert config.outbound_queue_messages == 4096
    assert config.outbound_queue_bytes == 1024 * 1024
    assert config.read_size == 65536
    assert config.inbound_queue_bytes == 256 * 1024
    assert config.write_timeout == 30


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ping_interval", 0),
        ("ping_timeout", -1),
        ("close_timeout", -0.5),
        ("inbound_queue", 0),
        ("inbound_queue_bytes", 0),
        ("write_timeout", 0),
        ("outbound_queue_messages", 0),
        ("outbound_queue_bytes", 0),
        ("read_size", 0),
    ],
)
def test_config_invalid_value_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ConnectionConfig(**{field: value})  # type: ignore[arg-type]


def test_config_keepalive_disabled_allowed() -> None:
    config = ConnectionConfig(
        ping_interval=None, ping_timeout=None, close_timeout=0, write_timeout=None
    )
    assert config.ping_interval is None
    assert config.write_timeout is None
