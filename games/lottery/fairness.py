"""The lottery's fairness core: commit-reveal draws that anyone can replay and check.

Nothing here keeps a clock, a random stream or any I/O: every outcome is a pure function of
the campaign's secret seed, the prize table, the stock and wins so far and (user, n). The
game rules and the verifier both call it, so what was drawn and what is checked are one
computation.

The construction, precisely (enough to write an independent verifier):

1. Commitment. Each campaign has a secret 32-byte `seed`. Before the first draw the
   operator publishes ``commitment = lowercase hex of SHA-256(seed)`` (64 characters).
   After the campaign the seed is revealed; anyone checks ``sha256(seed).hexdigest()``
   equals the published commitment, so the seed cannot have been chosen after the draws.

2. Prize table. An ordered list of prizes ``(id, title, weight, stock, kind, max_wins)``;
   `kind` is one of "product", "coupon", "points", "thanks". Exactly one prize has kind
   "thanks" and id "thanks": it has unlimited stock (None) and no cap (max_wins None).
   Every other prize has an int stock >= 0 and max_wins None or an int >= 1. Weights are
   ints >= 0 and their sum ``W`` over the whole table is > 0. ``W`` is a constant of the
   table: it never changes while stock runs out (see step 4). The order of the table is
   part of the construction.

3. Draw number. The n-th draw (n = 1, 2, 3, ... per user, in the order that user drew) of
   user `u` in campaign `c` uses the message ``m = f"{c}:{u}:{n}"`` encoded as UTF-8, and
   the blocks ``B_k = HMAC-SHA256(key=seed, msg=m if k == 0 else f"{m}:{k}")`` for
   k = 0, 1, 2, ... (``f"{m}:{k}"`` is also UTF-8, k in decimal). Each block is read as a
   256-bit big-endian unsigned integer ``x_k = int.from_bytes(B_k, "big")``. With
   ``limit = (2**256 // W) * W`` (the largest multiple of W not above 2**256), the first
   ``x_k < limit`` gives ``r = x_k % W``. Rejecting ``x_k >= limit`` is what makes every
   r in [0, W) exactly equally likely (no modulo bias); a rejection happens with
   probability ``(2**256 % W) / 2**256``, which is below 2**-190 for any W < 2**64, so in
   practice ``r = x_0 % W``.

4. Prize. A prize other than "thanks" is *available* to user `u` when its stock left is
   > 0 and (its max_wins is None or u's wins of it so far < max_wins). An unavailable
   prize's effective weight is 0 and its weight is added to the "thanks" prize's; every
   other prize keeps its weight (so the effective weights still sum to W). Walk the table
   in its configured order summing effective weights; the first prize whose running sum
   is > r is the outcome. A zero-weight prize is therefore never drawn.

5. State. After a draw the outcome's stock left drops by 1 (not for "thanks") and u's wins
   of it rise by 1. Draws are replayed in the order they were committed, each against the
   stock and wins left by all the draws before it (stock spans users, wins are per user).

Test vector: seed = bytes(range(32)) has commitment
``630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd``; campaign "c1", user
"u1", n = 1 gives m = b"c1:u1:1", B_0 =
``477212a018aedce2962c9c6beeabb7a4dc119bb063deaaa282f213932e2460bb`` and, for W = 100,
r = 39.

Note on the message format: it is exactly as above, with no escaping. A user id
containing ":" can make one draw's block k >= 1 equal another's block 0 (user "x:1",
n = 2 and user "x", n = 1, k = 2 are both "c:x:1:2"); blocks k >= 1 are read only after a
rejection, so this never matters in practice, and it cannot be steered without the seed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

SEED_BYTES = 32
THANKS = "thanks"
KINDS = frozenset({"product", "coupon", "points", THANKS})

# The draw blocks are 256-bit integers: r is drawn from [0, 2**256) by rejection.
_SPACE = 1 << 256


@dataclass(frozen=True)
class Prize:
    """One row of a prize table.

    `weight` is the prize's share of the table's total weight. `stock` is how many exist
    (None only for the "thanks" prize: unlimited). `max_wins` caps one user's wins of it
    (None: no cap; never set on "thanks").
    """

    id: str
    title: str
    weight: int
    stock: int | None
    kind: str
    max_wins: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What `verify` found.

    `checked` counts the draws that replayed identically before it stopped. On a failure
    at a draw, `first_mismatch` is that draw's index in the sequence given (from 0); when
    the outcome differs, `expected` is the prize id the replay gives and `found` the one
    recorded. `reason` says what happened in words.
    """

    ok: bool
    checked: int
    first_mismatch: int | None
    expected: str | None
    found: str | None
    reason: str


def _is_int(value: object) -> bool:
    # bool is an int subclass; a weight of True is a config mistake, not a weight of 1.
    return isinstance(value, int) and not isinstance(value, bool)


def check_table(prizes: Iterable[Prize]) -> None:
    """Raise ValueError naming the first problem if `prizes` is not a valid prize table.

    Valid: exactly one prize with kind "thanks", whose id is "thanks", stock None and
    max_wins None; every other prize has a known kind, an int stock >= 0 and max_wins None
    or an int >= 1; ids are distinct non-empty strings; weights are ints >= 0 summing to
    more than 0.
    """
    table = tuple(prizes)
    if not table:
        raise ValueError("prize table is empty")
    seen: set[str] = set()
    thanks = 0
    for prize in table:
        if not isinstance(prize.id, str) or not prize.id:
            raise ValueError(f"prize id must be a non-empty string, got {prize.id!r}")
        if prize.id in seen:
            raise ValueError(f"duplicate prize id {prize.id!r}")
        seen.add(prize.id)
        if not isinstance(prize.title, str):
            raise ValueError(f"prize {prize.id!r}: title must be a string")
        if prize.kind not in KINDS:
            raise ValueError(
                f"prize {prize.id!r}: kind {prize.kind!r} is not one of {sorted(KINDS)}")
        if not _is_int(prize.weight) or prize.weight < 0:
            raise ValueError(
                f"prize {prize.id!r}: weight must be an int >= 0, got {prize.weight!r}")
        if prize.kind == THANKS:
            thanks += 1
            if prize.id != THANKS:
                raise ValueError(f"the thanks prize must have id 'thanks', got {prize.id!r}")
            if prize.stock is not None:
                raise ValueError("the thanks prize has unlimited stock: its stock must be None")
            if prize.max_wins is not None:
                raise ValueError("the thanks prize is never capped: its max_wins must be None")
            continue
        if prize.id == THANKS:
            raise ValueError(f"prize id 'thanks' is reserved for kind 'thanks', not {prize.kind!r}")
        if prize.stock is None or not _is_int(prize.stock) or prize.stock < 0:
            raise ValueError(
                f"prize {prize.id!r}: stock must be an int >= 0, got {prize.stock!r}")
        if prize.max_wins is not None and (not _is_int(prize.max_wins) or prize.max_wins < 1):
            raise ValueError(
                f"prize {prize.id!r}: max_wins must be None or an int >= 1, "
                f"got {prize.max_wins!r} (use weight 0 or stock 0 to withhold a prize)")
    if thanks != 1:
        raise ValueError(f"a prize table needs exactly one 'thanks' prize, found {thanks}")
    if sum(prize.weight for prize in table) <= 0:
        raise ValueError("the total weight of the prize table must be > 0")


def total_weight(prizes: Iterable[Prize]) -> int:
    """W: the sum of every prize's configured weight (constant for the table)."""
    return sum(prize.weight for prize in prizes)


def initial_stock(prizes: Iterable[Prize]) -> dict[str, int]:
    """The stock left before any draw: prize id -> stock, for every prize but "thanks"."""
    return {prize.id: prize.stock for prize in prizes if prize.stock is not None}


def commitment(seed: bytes) -> str:
    """The public commitment to `seed`: the lowercase hex SHA-256 of its bytes."""
    return _sha256_hex(seed)


def _sha256_hex(seed: bytes) -> str:
    # `verify` has a parameter named `commitment`, which hides the function there.
    return hashlib.sha256(seed).hexdigest()


def _limit(total: int) -> int:
    """The largest multiple of `total` not above 2**256: block values at or above it are
    rejected."""
    return (_SPACE // total) * total


def _reduce(x: int, total: int) -> int | None:
    """`x % total` if `x` is below the rejection limit for `total`, else None (rejected).

    Accepting only x < limit leaves exactly limit // total values of x for each r, which is
    why every r in [0, total) is equally likely.
    """
    if not 0 <= x < _SPACE:
        raise ValueError("x must be a 256-bit unsigned integer")
    if x >= _limit(total):
        return None
    return x % total


def draw_message(campaign: str, user: str, n: int) -> bytes:
    """The HMAC message of draw `n` of `user` in `campaign`: f"{campaign}:{user}:{n}"."""
    return f"{campaign}:{user}:{n}".encode()


def draw_number(seed: bytes, campaign: str, user: str, n: int, total: int) -> int:
    """r in [0, total) for draw `n` (from 1) of `user` in `campaign` (step 3 of the module
    docstring): the first HMAC-SHA256 block below the rejection limit, modulo `total`."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if not _is_int(n) or n < 1:
        raise ValueError(f"draw numbers start at 1, got {n!r}")
    if not _is_int(total) or not 0 < total <= _SPACE:
        raise ValueError(f"total weight must be an int in (0, 2**256], got {total!r}")
    message = draw_message(campaign, user, n)
    limit = _limit(total)
    k = 0
    while True:
        block = hmac.digest(seed, message if k == 0 else message + f":{k}".encode(), "sha256")
        x = int.from_bytes(block, "big")
        if x < limit:
            return x % total
        k += 1


def available_ids(
    prizes: Iterable[Prize], stock_left: Mapping[str, int], wins_of_user: Mapping[str, int],
) -> frozenset[str]:
    """The ids of the prizes other than "thanks" that a user can draw now.

    `stock_left` must hold every prize but "thanks" (see `initial_stock`); `wins_of_user`
    maps prize id -> that user's wins so far, a missing id meaning none.
    """
    return frozenset(
        prize.id for prize in prizes
        if prize.kind != THANKS
        and stock_left[prize.id] > 0
        and (prize.max_wins is None or wins_of_user.get(prize.id, 0) < prize.max_wins)
    )


def pick(prizes: Sequence[Prize], available: Set[str], r: int) -> Prize:
    """The prize r in [0, W) lands on (step 4 of the module docstring).

    `available` holds the ids of the prizes other than "thanks" that can be drawn; any
    other prize's weight goes to "thanks", which is always available. `prizes` must be a
    table `check_table` accepts.
    """
    total = total_weight(prizes)
    if not 0 <= r < total:
        raise ValueError(f"r must be in [0, {total}), got {r}")
    spilled = sum(p.weight for p in prizes if p.kind != THANKS and p.id not in available)
    running = 0
    for prize in prizes:
        if prize.kind == THANKS:
            running += prize.weight + spilled
        elif prize.id in available:
            running += prize.weight
        else:
            continue
        if running > r:
            return prize
    # Unreachable for a checked table: the effective weights sum to W > r.
    raise ValueError("prize table has no 'thanks' prize to take the unavailable weight")


def outcome(
    seed: bytes,
    campaign: str,
    prizes: Sequence[Prize],
    stock_left: Mapping[str, int],
    wins_of_user: Mapping[str, int],
    user: str,
    n: int,
) -> Prize:
    """The prize draw `n` of `user` gets against this stock and this user's wins.

    Pure: reads the mappings and changes nothing. `prizes` must be a table `check_table`
    accepts (not re-checked here: this is the rules' per-draw path); `stock_left` and
    `wins_of_user` are as for `available_ids`.
    """
    r = draw_number(seed, campaign, user, n, total_weight(prizes))
    return pick(prizes, available_ids(prizes, stock_left, wins_of_user), r)


class Ledger:
    """A replay helper: the stock left per prize and the wins per (user, prize), updated by
    each `draw`. Mutable on purpose (a verifier replays thousands of draws through one);
    the rules keep their own frozen state and call `outcome`."""

    def __init__(self, prizes: Iterable[Prize]) -> None:
        """Start from the table's initial stock and no wins; raise ValueError on a bad
        table."""
        self.prizes: tuple[Prize, ...] = tuple(prizes)
        check_table(self.prizes)
        self._stock = initial_stock(self.prizes)
        self._wins: dict[str, dict[str, int]] = {}

    def stock_left(self, prize_id: str) -> int | None:
        """The stock left of a prize: None for "thanks" (unlimited)."""
        if prize_id == THANKS:
            return None
        return self._stock[prize_id]

    def wins(self, user: str, prize_id: str) -> int:
        """How many times `user` has drawn the prize."""
        return self._wins.get(user, {}).get(prize_id, 0)

    def stock_snapshot(self) -> dict[str, int]:
        """A copy of the stock left, prize id -> count, for every prize but "thanks"."""
        return dict(self._stock)

    def wins_of(self, user: str) -> dict[str, int]:
        """A copy of `user`'s wins, prize id -> count (prizes never won are absent)."""
        return dict(self._wins.get(user, {}))

    def draw(self, seed: bytes, campaign: str, user: str, n: int) -> Prize:
        """The outcome of draw `n` of `user` against the current state, recorded: the
        prize's stock drops by 1 (not for "thanks") and the user's wins of it rise by 1.

        It does not check that `n` follows the user's previous draw; `verify` does.
        """
        wins = self._wins.setdefault(user, {})
        prize = outcome(seed, campaign, self.prizes, self._stock, wins, user, n)
        if prize.kind != THANKS:
            self._stock[prize.id] -= 1
        wins[prize.id] = wins.get(prize.id, 0) + 1
        return prize


def verify(
    seed: bytes,
    commitment: str,
    campaign: str,
    prizes: Iterable[Prize],
    draws: Iterable[tuple[str, int, str]],
) -> Verdict:
    """Check a campaign's revealed seed and its draws, `(user, n, prize_id)` in commit order.

    The seed must hash to the commitment, the table must be valid, each user's n must run
    1, 2, 3, ... in order, and replaying every draw from the seed (stock and caps included)
    must give the recorded prize. Stops at the first draw that fails.
    """
    if len(seed) != SEED_BYTES:
        return Verdict(False, 0, None, None, None,
                       f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    if _sha256_hex(seed) != commitment.strip().lower():
        return Verdict(False, 0, None, None, None, "the seed does not match the commitment")
    try:
        ledger = Ledger(prizes)
    except ValueError as error:
        return Verdict(False, 0, None, None, None, f"bad prize table: {error}")
    drawn: dict[str, int] = {}
    checked = 0
    for index, (user, n, found) in enumerate(draws):
        want = drawn.get(user, 0) + 1
        if n != want:
            return Verdict(False, checked, index, None, None,
                           f"draw {index}: user {user!r} has draw n={n!r}, expected n={want}")
        drawn[user] = want
        expected = ledger.draw(seed, campaign, user, n).id
        if expected != found:
            return Verdict(False, checked, index, expected, found,
                           f"draw {index}: user {user!r} draw n={n} replays to {expected!r}, "
                           f"recorded {found!r}")
        checked += 1
    return Verdict(True, checked, None, None, None, f"all {checked} draws replay")
