"""The errors a user of edge-verify can see.

Every failure the product knows about is one of these. Each carries a one-line message a
person understands; the CLI prints it and exits with code 2.
"""
from edge_verify.edge.limits import SHOWN_NAME_LENGTH


def shown(text: str, limit: int = SHOWN_NAME_LENGTH) -> str:
    """A name as a message quotes it: in quotes, control characters escaped, cut after `limit` characters."""
    text = str(text)
    return repr(text[:limit] + "..." if len(text) > limit else text)


class EdgeVerifyError(Exception):
    """Base class: `str(error)` is the one-line message shown to the user."""


class ImageError(EdgeVerifyError):
    """An input image cannot be used. `reason` is one of REASONS."""

    REASONS = ("unreadable", "not_an_image", "empty", "blank", "too_small", "too_large", "not_a_signature")

    def __init__(self, reason: str, message: str):
        if reason not in self.REASONS:
            raise ValueError(f"unknown ImageError reason {reason!r}")
        super().__init__(message)
        self.reason = reason


class ModelError(EdgeVerifyError):
    """A model bundle is missing, damaged, tampered with or of the wrong kind."""


class StoreError(EdgeVerifyError):
    """The local store of enrolments cannot be read or written."""


class OtherModelError(ModelError, StoreError):
    """A user's embeddings in the store were made by another model or preprocessing: they cannot be
    compared with this model's. Raised by the API (before reading images) and by the store itself."""

    def __init__(self, user: str, fingerprint: str, this_fingerprint: str):
        import shlex
        super().__init__(f"{user} was enrolled with a different model (fingerprint {str(fingerprint)[:12]}, "
                         f"this model {this_fingerprint[:12]}), and embeddings of different models "
                         f"cannot be compared; re-enroll: edge-verify enroll {shlex.quote(user)} IMAGE... --replace")
        self.user = user


class UnknownUserError(StoreError):
    """The user named is not enrolled."""


class AlreadyEnrolledError(StoreError):
    """The user named is enrolled already (enrolling anew, or importing without replacing)."""

    def __init__(self, message: str, user: str):
        super().__init__(message)
        self.user = user


class UserLockedError(StoreError):
    """A check was refused: the user failed too many checks in a row and is locked out."""

    def __init__(self, message: str, user: str, until):
        super().__init__(message)
        self.user, self.until = user, until


class ProfileError(EdgeVerifyError):
    """A device profile is missing or invalid."""


class CaptureError(EdgeVerifyError):
    """A camera, signature pad or stroke file did not deliver a usable signature."""
