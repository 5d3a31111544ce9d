"""Every game the server runs: one line each (see games.core)."""

from __future__ import annotations

from typing import Any

from games.bargain import GAME as BARGAIN
from games.core import Game
from games.groupbuy import GAME as GROUPBUY
from games.leaderboard import GAME as LEADERBOARD
from games.lottery import GAME as LOTTERY

GAMES: dict[str, Game[Any, Any, Any, Any]] = {
    game.kind: game
    for game in (
        GROUPBUY,
        BARGAIN,
        LOTTERY,
        LEADERBOARD,
    )
}
