"""The mitmproxy glue: the only package that imports mitmproxy.

``addon.EgressWatch`` is the addon mitmproxy loads (options, ``configure``, lifecycle); it composes
``observe.Observe`` (hooks -> observation), ``layers.PassThrough`` (TLS/QUIC pass-through) and
``reload.Reloader`` (file notifications -> validated swap), like mitmproxy's ``default_addons()``.
``answers`` builds what a blocked client is told; ``run`` starts mitmdump with the addon.
"""
