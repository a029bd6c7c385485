# Entry script for `mitmdump -s deploy/mitmproxy/egresswatch.py` (kept outside the package:
# mitmproxy leaves a script's folder on sys.path).
from egresswatch.addon import EgressWatch

addons = [EgressWatch()]
