"""Typed errors with stable machine-readable codes, shared by every package.

A code never changes once released: clients, the web form and batch scripts key on it.
`http_status` is what the API answers when the error reaches a request.
"""
from __future__ import annotations


class FeqaError(Exception):
    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, http_status: int | None = None,
                 details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.details = details or {}

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, **({"details": self.details} if self.details else {})}


class InputError(FeqaError):
    """The caller sent something we cannot use (4xx)."""
    code = "invalid_input"
    http_status = 422


class VideoError(InputError):
    """The video cannot be turned into model inputs. Codes:

    not_a_video, unsupported_codec, empty_file, video_too_short, video_too_long,
    video_too_large, no_face, face_too_rare, several_faces
    """
    code = "not_a_video"


class ContractError(InputError):
    """Model inputs do not match the model manifest's preprocessing contract."""
    code = "contract_mismatch"


class UnknownExpression(InputError):
    code = "unknown_expression"
    http_status = 422


class ModelUnavailable(FeqaError):
    code = "model_unavailable"
    http_status = 503


class ModelIntegrityError(ModelUnavailable):
    """A model file does not have the sha256 its manifest records (changed or truncated)."""
    code = "model_checksum_mismatch"
