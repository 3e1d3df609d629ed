"""systemd's notify protocol (sd_notify) in a few lines: READY=1, STATUS=, WATCHDOG=1.

A datagram to the socket named by $NOTIFY_SOCKET; a leading '@' means Linux's abstract
namespace (a NUL byte). Without the variable (not under systemd) every call is a no-op.
"""

from __future__ import annotations

import os
import socket

from hybrid_common.logs import get_logger

log = get_logger(__name__)


class Notifier:
    """Sends notifications to systemd, if it is listening."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval_s = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram; False (logged once) if it failed."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
        except OSError as error:
            log.warning("notify.failed", error=str(error))
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Half of WatchdogSec (as systemd recommends), if the watchdog is meant for us."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2
