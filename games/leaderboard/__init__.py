"""The leaderboard (排行榜): sellers ranked live by what they sell and earn, per region and
per period, fed by the pipeline's paid orders and refunds."""

from games.leaderboard.game import GAME

__all__ = ["GAME"]
