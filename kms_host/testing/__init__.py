"""A real kms-host daemon for other projects' tests, with or without pytest.

:func:`running_host` starts one in a thread of its own (:mod:`kms_host.testing.daemon` says
why a thread) and hands out a :class:`KmsHost`: blocking calls for sync code, ``a``-prefixed
coroutine twins for async code (:mod:`kms_host.testing.host`). The pytest plugin
(:mod:`kms_host.pytest_plugin`) wraps it as the ``kms_host`` fixture. Nothing here imports
pytest, so the package imports without it.
"""

from kms_host.client.judgement import Outcome
from kms_host.testing.daemon import HostNotRunning
from kms_host.testing.host import ActivateOptions, KmsHost, running_host

__all__ = ["ActivateOptions", "HostNotRunning", "KmsHost", "Outcome", "running_host"]
