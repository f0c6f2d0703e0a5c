"""The one exception type users see.

Every error hwnet raises for bad input is a :class:`HwnetError` with a one-line message that says what is wrong
and what to do. The command-line tool prints it as ``hwnet: error: <message>`` and exits with status 2.
"""

__all__ = ["HwnetError"]


class HwnetError(Exception):
    """Bad input or an unsupported request; the message is one line, meant for the user."""
