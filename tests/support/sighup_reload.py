"""Test-only mitmproxy addon: SIGHUP runs the ``egresswatch.reload`` command.

Lets a test trigger the command from outside the process (``RunningProxy.reload()``) exactly as
an operator would from mitmproxy's console.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from mitmproxy import ctx

logger = logging.getLogger(__name__)


class SighupReload:
    def running(self) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reload)

    def done(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except RuntimeError:
            pass

    @staticmethod
    def _reload() -> None:
        logger.info("sighup_reload: running egresswatch.reload")
        try:
            ctx.master.commands.call("egresswatch.reload")
        except Exception as e:  # reported in the log; the test reads it
            logger.warning(f"sighup_reload: egresswatch.reload failed: {e!r}")


addons = [SighupReload()]
