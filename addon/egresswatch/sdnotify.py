"""systemd's notification protocol (``sd_notify``): readiness, watchdog pings and stopping.

A unit with ``Type=notify`` is "started" only when the service says ``READY=1``; with
``WatchdogSec=`` systemd restarts it when ``WATCHDOG=1`` stops arriving. The protocol is one
datagram per message on the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the
abstract namespace); without that variable (not under systemd) every call does nothing.

>>> n = Notifier({})
>>> n.enabled, n.watchdog_interval
(False, None)
>>> n.ready()  # not under systemd: nothing to do
False
>>> Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "20000000"}).watchdog_interval
10.0
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)


class Notifier:
    """Sends ``sd_notify`` messages to the socket in ``env`` (default: the process environment).

    ``watchdog_interval`` is half of ``WATCHDOG_USEC`` in seconds (systemd's advice), or None when
    no watchdog is configured for this process (``WATCHDOG_PID`` names another one).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self._address is not None and usec.isdigit() and int(usec) > 0:
            if not pid or pid == str(os.getpid()):
                self.watchdog_interval = int(usec) / 2e6
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> bool:
        """Send one message (``KEY=value`` lines); True when it was sent. A failure is logged once
        and never raised: systemd's absence must not stop the proxy."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self._address)
                s.sendall(message.encode())
            return True
        except OSError as e:
            if not self._failed:
                logger.warning("egresswatch: cannot notify systemd: %s", e)
                self._failed = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
