"""Test-only helpers: loopback upstreams and mitmproxy addons loaded into mitmdump with -s."""
