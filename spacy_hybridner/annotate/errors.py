"""The errors of an ``annotate`` run, as the CLI tells them apart (exit status 2, 1, 128 + signal)."""

import signal


class AnnotateInputError(ValueError):
    """The input cannot be read: a missing path, no matching files, an unreadable or
    malformed file, a missing column. The message names the file and the fix."""


class AnnotateRunError(RuntimeError):
    """The run could not complete (a worker process died, the pipeline failed to load in
    a worker). Nothing was published; the message says what happened and what to do."""


class AnnotateInterrupted(KeyboardInterrupt):
    """The run was stopped by SIGINT (Ctrl-C) or SIGTERM; nothing was published."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
