"""User-facing errors: raised for bad input, printed by the CLI as one line without a traceback."""
from __future__ import annotations


class SwinsegError(Exception):
    """A problem with the user's input (file, option, configuration) that the user can fix.

    The message must name the file or option and the problem in one line.
    """
