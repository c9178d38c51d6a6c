"""User-facing errors.

Anything a user can cause (a bad name, a malformed budget, a missing file) raises a
:class:`KdsearchError`. The command line prints its message on one line and exits with
code 2; library users catch it like any other exception.
"""


class KdsearchError(Exception):
    """An error caused by the user's input, reported without a traceback."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class UnknownNameError(KdsearchError, KeyError):
    """A name that is not in a registry (model, dataset, method, ...)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
