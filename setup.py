"""Build the optional native suffix table (everything else is in pyproject.toml).

``optional=True``: without a C compiler the package still installs and the matcher uses its
pure-Python backend; ``tests/test_matcher.py`` fails if the extension is missing, so CI notices.
"""

from __future__ import annotations

from setuptools import Extension
from setuptools import setup

setup(
    ext_modules=[
        Extension(
            "egresswatch._suffixtable",
            ["addon/egresswatch/_suffixtable.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
