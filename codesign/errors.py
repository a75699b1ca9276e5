"""User-facing errors.

Anything a user can cause (bad config, unsupported ONNX op, missing tool, design too big) raises a
subclass of :class:`CodesignError`. The CLI prints its message on one line and exits with its
``exit_code`` (2 for bad input), without a traceback. Internal bugs stay ordinary exceptions.
"""

from __future__ import annotations


class CodesignError(Exception):
    """An error caused by the user's input or environment, reported without a traceback."""

    exit_code = 2


class ConfigError(CodesignError):
    """A configuration file is malformed; the message names the key path."""


class UnsupportedError(CodesignError):
    """A model, node or layer uses something this stage does not support (message names it)."""


class ToolMissingError(CodesignError):
    """An external tool is not installed; the message says how to install it."""


class VerificationError(CodesignError):
    """Hardware did not match the golden model (exit code 1: a result, not a usage error)."""

    exit_code = 1


class StageInputError(CodesignError):
    """A stage was run on a run directory that lacks the previous stage's artifacts."""
