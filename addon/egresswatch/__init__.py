"""egresswatch: watch, count and block outbound traffic to designated apps.

The package is usable without mitmproxy: the catalogue, matcher, policy, store and report modules
import only the standard library and their own small dependencies. ``egresswatch.proxy`` is the one
package that talks to mitmproxy.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
