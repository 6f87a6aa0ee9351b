"""The one user-facing exception type of medseg.

Every error a user can cause (bad file, bad manifest, bad config, bad option) is raised
as :class:`MedsegError`, whose message names the file or value, what was expected and
what was found. The CLI turns it into a one-line message and exit code 1.
"""

from __future__ import annotations

from os import PathLike


class MedsegError(Exception):
    """A problem with user input, reported without a traceback by the CLI.

    Parameters
    ----------
    message
        What went wrong: what was expected and what was found.
    path
        The file or folder concerned, if any; it is prefixed to the message.
    """

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
