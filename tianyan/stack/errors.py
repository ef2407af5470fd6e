"""The one exception the local stack raises."""


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says what to do."""
