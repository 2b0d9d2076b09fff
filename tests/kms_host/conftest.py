"""Shared by the unit tests below: ``sightings`` (sample client records) is imported from here.

Pytest puts a conftest's directory on ``sys.path``, so the tests of ``storage/`` and ``host/``
import the same helper module.
"""
