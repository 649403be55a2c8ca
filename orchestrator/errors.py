"""The base of every error a user can cause: the CLI prints it in one line and exits 2; and the
interruption by a signal, after which it exits 128 + the signal's number."""

import signal


class UserError(Exception):
    """A problem with the user's input (file, key, value, directory), phrased for them."""


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (`ray job stop`, `kill`) stopped the command. Like
    KeyboardInterrupt, no ``except Exception`` catches it on its way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
