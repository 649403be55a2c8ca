"""The base of every error a user can cause: the CLI prints it in one line and exits 2."""


class UserError(Exception):
    """A problem with the user's input (file, key, value, directory), phrased for them."""
