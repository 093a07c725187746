"""Errors meant for the user: the CLI and the app show their message, never a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message says what to do."""


class SpecError(UserError):
    """An experiment spec failed validation; the message names the field's path."""


class OfflineError(UserError):
    """Something must be downloaded but the machine is offline or the source unreachable."""


class Interrupted(Exception):
    """Work stopped on request (a cancel, a step limit), not because it failed: callers that record
    one failed item and go on (the runner's recipes) let this through to stop the whole job."""
