# Entry script for `mitmdump -s` in an installed wheel (`egresswatch run` finds it). It sits in a
# directory of its own because mitmproxy leaves a script's folder on sys.path.
from egresswatch.proxy.addon import EgressWatch

addons = [EgressWatch()]
