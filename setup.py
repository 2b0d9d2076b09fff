"""Extension modules for setuptools; everything else about the package is in pyproject.toml.

There are none unless ``KMS_HOST_MYPYC=1`` asks for the mypyc build of the Rijndael module:
then this runs under ``_build/kms_host_backend.py`` (the in-tree build backend), which had
pip put mypy into the build environment and decides what to compile, and when.
"""

from kms_host_backend import compiled_extensions
from setuptools import setup

setup(ext_modules=compiled_extensions())
