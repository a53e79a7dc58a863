"""The one exception type users see.

Every user-facing failure (bad recipe, bad data, missing model, wrong adapter) raises
`AttuneError` with a message that names the file, record or field. The CLI prints the message
and exits non-zero instead of showing a traceback.
"""


class AttuneError(Exception):
    """A problem with the user's input or environment, with a message meant for a person."""
