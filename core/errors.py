"""The one exception type that carries a message meant for the user."""


class AttrexError(ValueError):
    """Bad input or an unusable artefact, with a message naming what is wrong and what is accepted.

    Raised before anything is changed: catching it leaves every cache and file as it was.
    """
