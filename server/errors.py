"""The contract's error shape and the HTTP status each code maps to."""

from __future__ import annotations

from typing import Any

STATUS = {
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_request": 400,
    "payload_too_large": 413,
    "group_full": 409,
    "group_closed": 409,
    "already_member": 409,
    "limit_reached": 409,
    "out_of_stock": 409,
    "campaign_not_active": 409,
    "already_bound": 409,
    "return_window_closed": 409,
    "insufficient_balance": 409,
    "already_reviewed": 409,
    "rate_limited": 429,
    "unavailable": 503,
    "internal": 500,
}


class ApiError(Exception):
    """A request refused with a contract error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return status_of(self.code)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def status_of(code: str) -> int:
    """HTTP status for a contract error code (409 for game refusals not listed)."""
    return STATUS.get(code, 409)
