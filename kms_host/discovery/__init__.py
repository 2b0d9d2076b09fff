"""DNS SRV discovery (spec 1.3): the responder, the RFC 2136 publisher, lookups and records.

Not named ``dns``: that is dnspython's import name.
"""
