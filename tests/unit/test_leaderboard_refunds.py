"""The leaderboard's rules for an order refunded in pieces: a sales board takes back
exactly the fen refunded, a commission board exactly the commission reversed, an order
or member count waits for the whole refund; pieces applied twice or out of order take
back nothing more, and the whole refund after pieces takes back exactly the rest."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.commission import reversed_through
from games.errors import GameError
from games.leaderboard import GAME, rules
from games.leaderboard.rules import Part, Score, Scored, Unscore
from tests.unit.test_leaderboard import T, board, facts, run, standings

EARNED = (("alice", 1, 600), ("root", 2, 180))


def part(refunded: int, amount: int = 6000) -> Part:
    """Where an order's refunds stand once `refunded` of it is refunded (the pipeline's
    rounding: games.commission.reversed_through)."""
    return Part(amount, refunded, EARNED, {u: reversed_through(fen, amount, refunded)
                                           for u, _, fen in EARNED})


def scored(metric: str) -> Any:
    state = rules.initial_state(board(metric=metric))
    state, _ = run(state, Score("o1", "x", facts(6000, "alice", earned=EARNED)))
    state, _ = run(state, Score("o2", "y", facts(1000, "alice", earned=(("alice", 1, 100),))))
    return state


@pytest.mark.parametrize(("metric", "after_pieces", "after_whole"), [
    ("sales", [("alice", 4000)], [("alice", 1000)]),  # 7000 less 3000 refunded
    ("commission", [("alice", 400), ("root", 90)], [("alice", 100)]),  # 700 less 300 ...
    ("orders", [("alice", 2)], [("alice", 1)]),  # counts go with the whole refund only
    ("members", [("alice", 2)], [("alice", 1)]),
])
def test_pieces_take_back_exactly_their_share_and_the_whole_refund_the_rest(
        metric: str, after_pieces: list[tuple[str, int]],
        after_whole: list[tuple[str, int]]) -> None:
    state = scored(metric)
    state, _ = run(state, Unscore("o1", part(1000)))
    state, _ = run(state, Unscore("o1", part(3000)))
    assert standings(state) == after_pieces
    # Again, or an older piece late: nothing more.
    for late in (part(3000), part(1000)):
        state, events = run(state, Unscore("o1", late))
        assert events == []
    assert standings(state) == after_pieces
    state, _ = run(state, Unscore("o1"))
    assert standings(state) == after_whole
    assert run(state, Unscore("o1", part(5000)))[1] == []  # after the whole: nothing


@given(cuts=st.lists(st.integers(1, 5999), max_size=8, unique=True),
       order=st.permutations(range(8)), metric=st.sampled_from(["sales", "commission"]))
def test_any_pieces_in_any_order_then_the_whole_refund_leave_only_the_other_order(
        cuts: list[int], order: list[int], metric: str) -> None:
    points = sorted(cuts)  # cumulative refunded amounts, as pieces leave them
    state = scored(metric)
    taken_first = [points[i] for i in order if i < len(points)]
    for refunded in taken_first:
        state, _ = run(state, Unscore("o1", part(refunded)))
    # However they came, what is left is what the furthest piece leaves.
    furthest = max(points, default=0)
    left = {"sales": [("alice", 1000 + 6000 - furthest)],
            "commission": [("alice", 100 + 600 - reversed_through(600, 6000, furthest)),
                           ("root", 180 - reversed_through(180, 6000, furthest))]}[metric]
    assert standings(state) == sorted([e for e in left if e[1] > 0], key=lambda e: -e[1])
    state, _ = run(state, Unscore("o1"))
    assert standings(state) == [("alice", 1000 if metric == "sales" else 100)]


def test_a_piece_event_round_trips_through_its_dict() -> None:
    state = scored("sales")
    [event] = rules.decide(state, Unscore("o1", part(1000)), T)
    assert isinstance(event, Scored)
    assert event.part and rules.event_from_dict(rules.event_to_dict(event)) == event
    # An event written before pieces existed has no `part`: a whole refund.
    old = {k: v for k, v in rules.event_to_dict(event).items() if k != "part"}
    whole = rules.event_from_dict(old)
    assert isinstance(whole, Scored) and whole.part is False


def test_the_notice_of_a_piece_becomes_a_partial_unscore() -> None:
    notice = {"amount": 6000, "at": T, "referrer": "alice", "regions": {},
              "earned": [list(e) for e in EARNED], "order": "o1", "refunded": 1000,
              "reversed": {"alice": 100, "root": 30}}
    command = GAME.command("leaderboard.unscore_part", "x", {"order": "o1-1",
                                                              "facts": notice})
    assert command == Unscore("o1", Part(6000, 1000, EARNED, {"alice": 100, "root": 30}))
    for bad in ({**notice, "refunded": 7000}, {**notice, "order": "O 1"},
                {**notice, "reversed": {"alice": -1}}, {**notice, "reversed": []}, None):
        with pytest.raises(GameError) as refused:
            GAME.command("leaderboard.unscore_part", "x", {"order": "o1-1", "facts": bad})
        assert refused.value.code == "invalid_request"
