# Entry script: `mitmdump -s deploy/mitmproxy/egresswatch.py` (the package must be installed).
# mitmproxy puts this script's folder first on sys.path, where this file would shadow the
# `egresswatch` package it shares a name with; take the folder off before importing.
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

from egresswatch.proxy.addon import EgressWatch  # noqa: E402

addons = [EgressWatch()]
