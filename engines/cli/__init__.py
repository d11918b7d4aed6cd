"""The command lines of `engines`: ``n2a-denoise`` (`denoise`; ``engines.cli:main``), the TensorRT
plan builder (``python -m engines.cli.plan``) and the ``auto`` report (``python -m engines.cli.select``).

The import rule: these modules may import ``noise2atom.io``, ``metrics``, ``guard``, ``scaling``
and ``finetune`` (they read and write files and judge results); the library modules of `engines`
import only ``noise2atom.models``, ``checkpoint`` and ``files`` (tests/engines/test_layout.py
checks it).
"""
from .denoise import main  # n2a-denoise's entry point (pyproject.toml: engines.cli:main)

__all__ = ["main"]
