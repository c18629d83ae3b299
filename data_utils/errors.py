"""The one exception type for bad user input.

Every check on a user-supplied file, array or argument raises :class:`InputError` with a message
that names the offending file/argument (and, for arrays, the index) and says how to fix it. The
command-line entry points catch it and print the message without a traceback.
"""


class InputError(ValueError):
    """Bad input from the user: a file, an array or an argument. The message says what and how to fix it."""
