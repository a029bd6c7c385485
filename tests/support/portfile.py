"""Test-only mitmproxy addon: write the listening addresses to a file once the proxy runs.

``--set portfile=PATH`` gets ``{"pid": …, "servers": [{"mode": full_spec, "addrs": [[h, p], …]}]}``
written atomically in ``running()`` (works with ``-q``, unlike parsing the "listening at" line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mitmproxy import ctx


class Portfile:
    def load(self, loader: Any) -> None:
        loader.add_option("portfile", str, "", "Write the listening addresses here when running.")

    def running(self) -> None:
        if not ctx.options.portfile:
            return
        ps = ctx.master.addons.get("proxyserver")
        servers = [
            {"mode": s.mode.full_spec, "addrs": [list(a[:2]) for a in s.listen_addrs]}
            for s in ps.servers
        ]
        path = Path(ctx.options.portfile)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "servers": servers}))
        tmp.replace(path)


addons = [Portfile()]
