"""The gateway's method table comes from the registered games' declarations."""

from __future__ import annotations

import pytest

from games.core import Method, Param
from games.groupbuy import GAME as GROUPBUY
from games.registry import GAMES
from server.errors import ApiError
from server.gateway import METHODS, REFERRER_PARAM, game_methods
from server.params import check


def test_every_public_method_of_every_game_is_offered_with_its_route() -> None:
    for game in GAMES.values():
        for method in game.methods:
            if not method.public:
                assert method.name not in METHODS
                continue
            offered = METHODS[method.name]
            # A method a share link leads to also takes the gateway's optional referrer.
            params = {**method.params, "referrer": REFERRER_PARAM} if method.binds \
                else method.params
            assert (offered.params, offered.mutating, offered.route) == (
                params, method.mutating, method.route)


def test_the_entry_commands_take_an_optional_referrer_the_games_never_declare() -> None:
    binding = {m.name for game in GAMES.values() for m in game.methods if m.binds}
    assert binding == {"groupbuy.open", "groupbuy.join", "bargain.start", "bargain.help",
                       "lottery.draw"}
    for game in GAMES.values():
        for method in game.methods:
            assert "referrer" not in method.params  # the reducer never sees it
            if method.public:
                assert ("referrer" in METHODS[method.name].params) == method.binds
    assert not REFERRER_PARAM.required and REFERRER_PARAM.kind is str


@pytest.mark.parametrize("value", ["", "a b", "x" * 200, "bad\n", 7, None, ["u1"]])
def test_a_malformed_referrer_is_an_invalid_request(value: object) -> None:
    spec = METHODS["groupbuy.join"].params
    with pytest.raises(ApiError) as caught:
        check({"campaign": "c1", "group": "g1", "referrer": value}, spec)
    assert caught.value.code == "invalid_request" and "referrer" in caught.value.message
    assert check({"campaign": "c1", "group": "g1", "referrer": "u-1@shop"}, spec)[
        "referrer"] == "u-1@shop"


def test_a_game_may_not_declare_the_gateways_referrer() -> None:
    clash = Method("groupbuy.join", {"referrer": Param(str)}, True, binds=True)
    reading = Method("groupbuy.peek", {}, False, read="instance", binds=True)
    for method in (clash, reading):
        class With:
            def __getattr__(self, name: str) -> object:
                return getattr(GROUPBUY, name)

            methods = (method,)

        with pytest.raises(ValueError):
            game_methods([With()])  # type: ignore[list-item]


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
