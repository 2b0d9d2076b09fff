"""The host's decisions as pure functions: activation rules, counting, catalog, scenarios.

Nothing here does I/O on a socket, a database or the event loop (tests/kms_host/test_layers.py
holds it to that), so every rule is unit-tested from values alone.
"""
