"""Errors a user can cause.

Every :class:`UserError` that reaches the CLI is printed as one line (``robustvit: error: ...``)
and ends the process with exit code 2, with no traceback and nothing half-written.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: unknown name, missing path, bad checkpoint, bad config."""

    exit_code = 2

    def __str__(self) -> str:  # keep it to one line whatever the message holds
        return " ".join(super().__str__().split())
