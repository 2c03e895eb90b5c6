"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class NndlError(Exception):
    """A problem with the user's input (file, config, arguments) that they can fix.

    The message is one line naming the file/field and the fix.
    """


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C once the last completed epoch's checkpoint is on disk."""
