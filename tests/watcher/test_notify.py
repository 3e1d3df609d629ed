"""sd_notify: datagrams to $NOTIFY_SOCKET (path or abstract '@'), watchdog interval rules."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from watcher.notify import Notifier


def test_path_socket_receives_ready_and_status(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled and notifier.ready("up, 0 queued")
        assert server.recv(4096) == b"READY=1\nSTATUS=up, 0 queued"
        assert notifier.watchdog()
        assert server.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket() -> None:
    name = f"hybrid-watcher-notify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping("bye")
        assert server.recv(4096) == b"STOPPING=1\nSTATUS=bye"


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).status("x")


def test_watchdog_interval_is_half_and_only_for_us() -> None:
    assert Notifier({"WATCHDOG_USEC": "60000000"}).watchdog_interval_s == 30.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval_s == 1.0
    theirs = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier(theirs).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
