"""The bargain (砍价): an initiator's price, cut by distinct helpers down to a floor.

`GAME` is the one `games.core.Game` value the registry hosts; the rules are in `rules`,
the campaign and its config table in `campaign`.
"""

from __future__ import annotations

from games.bargain.game import GAME

__all__ = ["GAME"]
