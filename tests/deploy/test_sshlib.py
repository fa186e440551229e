"""roost.deploy.sshlib: asyncssh's per-packet log text is built only at debug level 3."""

from __future__ import annotations

from typing import Any, ClassVar

from roost.deploy.sshlib import asyncssh


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def packet(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(args)


class _Handler(asyncssh.packet.SSHPacketLogger):  # type: ignore[misc]
    _handler_names: ClassVar[dict[int, str]] = {94: "MSG_CHANNEL_DATA"}

    def __init__(self) -> None:
        self.recorder = _Recorder()

    @property
    def logger(self) -> Any:
        return self.recorder


def test_no_packet_log_text_below_debug_level_3() -> None:
    handler = _Handler()
    handler.log_sent_packet(94, 1, b"x" * 10)
    handler.log_received_packet(94, 2, b"y" * 10)
    assert handler.recorder.calls == []


def test_packet_log_at_debug_level_3() -> None:
    handler = _Handler()
    asyncssh.set_debug_level(3)
    try:
        handler.log_sent_packet(94, 1, b"x" * 10)
    finally:
        asyncssh.set_debug_level(1)
    assert len(handler.recorder.calls) == 1
    assert "MSG_CHANNEL_DATA" in str(handler.recorder.calls[0])
