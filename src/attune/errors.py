"""The one exception type users see.

Every user-facing failure (bad recipe, bad data, missing model, wrong adapter) raises
`AttuneError` with a message that names the file, record or field. The CLI prints the message
and exits non-zero instead of showing a traceback.
"""


from collections.abc import Iterable


class AttuneError(Exception):
    """A problem with the user's input or environment, with a message meant for a person."""


def did_you_mean(name: str, known: "Iterable[str]") -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when none is close."""
    import difflib

    hint = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def unknown(what: str, name: str, known: "Iterable[str]") -> AttuneError:
    """The one wording for every unknown name (adapter, objective, metric, strategy...)."""
    known = list(known)
    return AttuneError(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}")
