"""The one exception a user can cause in analysis."""

from orchestrator.errors import UserError

__all__ = ["AnalysisError"]


class AnalysisError(UserError):
    """A problem with the experiment directory or the options, said in one line.

    The CLI prints ``str(error)`` and exits non-zero, without a traceback.
    """
