"""Checking a lottery's published audit (`GET /api/lotteries/{campaign}/audit`, or the
same document saved to a file): the revealed seed against the commitment, and every draw
replayed in commit order (`fairness.verify`). What `fission lottery verify` runs.

The document: `{"lottery": {"id", "commitment", "seed", ...}, "prizes": [{"id", "title",
"kind", "weight", "stock", "max_wins_per_user"}, ...] (the table in its order, with the
stock it started with), "draws": [{"seq", "user", "n", "prize"}, ...] (commit order)}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from games.lottery.fairness import Prize, Verdict, verify


def check(document: Any) -> Verdict:
    """The verdict on an audit document; ValueError when it is not one."""
    if not isinstance(document, Mapping):
        raise ValueError("an audit is a JSON object")
    lottery, prizes, draws = (document.get(k) for k in ("lottery", "prizes", "draws"))
    if not isinstance(lottery, Mapping) or not isinstance(prizes, list) \
            or not isinstance(draws, list):
        raise ValueError("an audit has `lottery`, `prizes` and `draws`")
    seed, committed, campaign = (lottery.get(k) for k in ("seed", "commitment", "id"))
    if not isinstance(seed, str) or not isinstance(committed, str) \
            or not isinstance(campaign, str):
        raise ValueError("the audit has no revealed seed, commitment or campaign id")
    try:
        seed_bytes = bytes.fromhex(seed)
        table = [Prize(id=str(p["id"]), title=str(p.get("title", "")), weight=p["weight"],
                       stock=p.get("stock"), kind=str(p["kind"]),
                       max_wins=p.get("max_wins_per_user")) for p in prizes]
        ordered = sorted(draws, key=lambda d: int(d["seq"]))
        recorded = [(str(d["user"]), int(d["n"]), str(d["prize"])) for d in ordered]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"a malformed audit: {exc!r}") from None
    return verify(seed_bytes, committed, campaign, table, recorded)


def report(verdict: Verdict) -> str:
    """One line for a person: all draws match, or the first that does not."""
    if verdict.ok:
        return f"ok: all {verdict.checked} draws match the revealed seed and the commitment"
    if verdict.first_mismatch is None:
        return f"FAILED: {verdict.reason}"
    if verdict.expected is None:
        return f"FAILED at draw {verdict.first_mismatch + 1}: {verdict.reason}"
    return (f"FAILED at draw {verdict.first_mismatch + 1}: the seed gives "
            f"{verdict.expected!r}, the audit records {verdict.found!r}")
