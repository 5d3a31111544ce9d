"""The lottery's audit document, as the game answers it, checked by `games.lottery.audit`
and by `fission lottery verify` on a file."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from games.lottery import GAME
from games.lottery.audit import check, report
from games.lottery.campaign import LotteryCampaign
from games.lottery.game import Audit
from games.lottery.rules import Draw, RevealSeed
from games.settings import Table
from server.cli import main
from tests.support import configs

START = 1_900_000_000_000
END = START + 86_400_000


def _campaign() -> LotteryCampaign:
    table = configs.lottery("spin", free=5, starts_at="2030-03-17T17:46:40+00:00",
                            ends_at="2030-03-18T17:46:40+00:00")
    return GAME.parse_campaign(Table("test", "campaigns[0]", table), None)  # type: ignore[arg-type]


def _audit() -> dict[str, Any]:
    campaign = _campaign()
    state = GAME.initial(campaign)
    rng = random.Random(7)
    for step in range(60):
        user = f"user-{step % 12}"
        try:
            events = GAME.decide(state, Draw(user), START + step, rng)
        except Exception:
            continue
        for event in events:
            state = GAME.evolve(state, event)
    for event in GAME.decide(state, RevealSeed(), END, rng):
        state = GAME.evolve(state, event)
    document: dict[str, Any] = json.loads(GAME.answer(campaign, state, Audit(), [], END))
    return document


def test_an_honest_audit_verifies() -> None:
    document = _audit()
    assert len(document["draws"]) == 60
    verdict = check(document)
    assert verdict.ok and verdict.checked == 60, verdict
    assert report(verdict).startswith("ok: all 60 draws")


def test_a_changed_outcome_is_found_at_its_draw() -> None:
    document = _audit()
    forged = copy.deepcopy(document)
    draw = forged["draws"][17]
    draw["prize"] = "coupon" if draw["prize"] != "coupon" else "thanks"
    verdict = check(forged)
    assert not verdict.ok and verdict.first_mismatch == 17
    assert "at draw 18" in report(verdict)


def test_a_seed_that_is_not_the_committed_one_fails() -> None:
    forged = _audit()
    forged["lottery"]["seed"] = "00" * 32
    assert not check(forged).ok


@pytest.mark.parametrize("document", [
    [], {}, {"lottery": {}, "prizes": [], "draws": []},
    {"lottery": {"id": "x", "commitment": "ab", "seed": "zz"}, "prizes": [], "draws": []},
    {"lottery": {"id": "x", "commitment": "ab", "seed": "00"}, "prizes": [{}], "draws": []},
])
def test_what_is_no_audit_is_refused(document: Any) -> None:
    with pytest.raises(ValueError):
        check(document)


def test_the_cli_verifies_a_saved_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    good, bad, junk = tmp_path / "good.json", tmp_path / "bad.json", tmp_path / "junk.json"
    document = _audit()
    good.write_text(json.dumps(document))
    document["draws"][3]["prize"] = "teapot" if document["draws"][3]["prize"] != "teapot" \
        else "thanks"
    bad.write_text(json.dumps(document))
    junk.write_text("not json")
    assert main(["lottery", "verify", str(good)]) == 0
    assert main(["lottery", "verify", str(bad)]) == 1
    assert main(["lottery", "verify", str(junk)]) == 2
    out = capsys.readouterr()
    assert "ok: all 60 draws" in out.out and "FAILED at draw 4" in out.out
    assert "cannot verify" in out.err
