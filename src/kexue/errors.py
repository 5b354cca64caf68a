"""The one exception type that the command line turns into a one-line message."""


class KexueError(Exception):
    """A user-facing error: bad input, missing data, a run that cannot go on.

    The CLI prints ``kexue: error: <message>`` and exits with status 2, without a traceback.
    Raise it for anything a user can fix; let programming errors raise what they raise.
    """
