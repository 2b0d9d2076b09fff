"""The read-only dashboard and JSON API (``[web] listen``): :mod:`kms_host.web.server`."""
