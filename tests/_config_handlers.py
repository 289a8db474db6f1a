"""A handler class importable by module and class name, for config files' ``handlers``."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["ScaledNpyHandler", "SPEC"]

#: A spec no built-in handler or entry point reads: only a registration makes it readable.
SPEC = "CONFIG_TEST_NPY"


class ScaledNpyHandler:
    """A ``.npy`` file times the resource's ``scale`` (so a test sees which handler read it)."""

    def __init__(self, filename: str | os.PathLike, scale: float = 1.0):
        self.filename = os.fspath(filename)
        self.scale = scale

    def __call__(self) -> np.ndarray:
        return np.load(self.filename, allow_pickle=False) * self.scale
