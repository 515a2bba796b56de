"""setuptools has no pyproject.toml key for cffi's build hook; this file adds it.

All other metadata lives in pyproject.toml.
"""

from setuptools import setup

setup(
    cffi_modules=[
        "build_ffi.py:ffibuilder",
        "build_ffi.py:echo_builder",
        "build_ffi.py:loadgen_builder",
    ]
)
