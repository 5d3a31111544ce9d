"""The gateway's method table comes from the registered games' declarations."""

from __future__ import annotations

from games.core import Method
from games.groupbuy import GAME as GROUPBUY
from games.registry import GAMES
from server.gateway import METHODS, game_methods


def test_every_public_method_of_every_game_is_offered_with_its_route() -> None:
    for game in GAMES.values():
        for method in game.methods:
            if not method.public:
                assert method.name not in METHODS
                continue
            offered = METHODS[method.name]
            assert (offered.params, offered.mutating, offered.route) == (
                method.params, method.mutating, method.route)


def test_a_command_only_the_server_sends_is_never_offered_to_clients() -> None:
    internal = Method("groupbuy.paid", {}, True, public=False)

    class WithInternal:
        """The group-buy, plus a command the server sends after a verified payment."""

        def __getattr__(self, name: str) -> object:
            return getattr(GROUPBUY, name)

        methods = (*GROUPBUY.methods, internal)

    offered = {m.name for m in game_methods([WithInternal()])}  # type: ignore[list-item]
    assert offered == {m.name for m in GROUPBUY.methods if m.public}
    assert "groupbuy.paid" not in offered
    # The group-buy's own: a payment's outcome comes from a verified notification only.
    assert "groupbuy.payment" in {m.name for m in GROUPBUY.methods}
    assert "groupbuy.payment" not in offered
