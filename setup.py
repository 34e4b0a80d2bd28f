"""Build of the native extension (everything else is in pyproject.toml).

`computewatch._native._chiplog` is the chip-log audit's fast path (formats.chip_audit). It is
required: a failed build fails the install (no `optional=True`), and tests/test_chip_audit_native.py
fails when the module is not the one in use, so a missing build cannot go unnoticed. It needs a C
compiler and the Python headers only."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "computewatch._native._chiplog",
            ["src/computewatch/_native/_chiplog.c"],
            extra_compile_args=["-O3", "-std=gnu99", "-pthread", "-Wall", "-Wno-unused-parameter"],
            extra_link_args=["-pthread"],
            libraries=["dl", "m"],
        )
    ]
)
