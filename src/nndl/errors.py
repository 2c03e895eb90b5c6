"""User-facing errors: the CLI prints these as one line and exits with code 2."""


class NndlError(Exception):
    """A problem with the user's input (file, config, arguments) that they can fix.

    The message is one line naming the file/field and the fix.
    """


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after Ctrl-C: the message says what was kept and the next step (exit code 130 in the CLI).

    A ``KeyboardInterrupt``: code that catches ``Exception`` (a search's trial guard, a retrain)
    lets it through, as it would the Ctrl-C itself.

    From :func:`nndl.training.train`: ``epoch`` is the (1-based) epoch that was running and ``saved``
    the epochs the checkpoint on disk holds (None: no checkpoint was written).
    """

    def __init__(self, message: str, epoch: int | None = None, saved: int | None = None):
        super().__init__(message)
        self.epoch, self.saved = epoch, saved
