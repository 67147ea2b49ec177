"""systemd's notification protocol (sd_notify), with the standard library only.

Under a unit with `Type=notify`, systemd passes a datagram socket in NOTIFY_SOCKET: a path, or a name in Linux's
abstract namespace written with a leading "@" (sent as a NUL byte). The watcher sends READY=1 once it watches,
WATCHDOG=1 while its main loop is healthy (every half of WATCHDOG_USEC, when `WatchdogSec=` is set and the
watchdog is meant for this process: WATCHDOG_PID, when set, is its pid), STATUS=... lines, and STOPPING=1.
Without NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification ("READY=1", "WATCHDOG=1", "STATUS=...", lines joined by newlines); True when sent."""
    address = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8", "replace"))
    except OSError:
        return False
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when no watchdog is expected of us."""
    env = env if env is not None else os.environ
    if not env.get("NOTIFY_SOCKET"):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0") or "0")
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2e6
