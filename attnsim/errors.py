"""User errors: problems a user can fix. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """A problem with the user's input or settings; the message names the bad value and the fix."""
