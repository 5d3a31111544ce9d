"""The lottery (抽奖): weighted prize draws that anyone can verify once the seed is revealed.

The fairness core (commitment, draw numbers, the prize mapping, replay and the verifier)
is `games.lottery.fairness`.
"""

from games.lottery.game import GAME

__all__ = ["GAME"]
