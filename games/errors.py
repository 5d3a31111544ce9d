"""The one exception a rule raises when a command is refused."""

from __future__ import annotations


class GameError(Exception):
    """A command refused by the rules; `code` is the contract's snake_case error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The contract's error body: `{"code", "message"}`."""
        return {"code": self.code, "message": self.message}
