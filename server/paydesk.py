"""The payment step of the transports: create what an answer asks to be paid, take the
provider's notifications, and (in the sandbox) pay.

A game's method declared `pays=True` answers with a pending payment `P` when it holds
something until paid (a group-buy's seat). Before the transport answers, the desk creates
that payment at the provider and adds what the client needs to pay it (`P.params`,
WeChat Pay JSAPI's `requestPayment` arguments). With the sandbox paying "immediate" (the
default), its payer pays at once instead: the sandbox signs its notification and the desk
verifies it as the notify route does and hands it to the game as its payment command, so
the answer is the game's word on that payment, the caller seated as a paid member: the
word comes with the command itself where the amount is the campaign's (`prepay`), else
after the hold (`settle`). A seat is paid by a verified notification, never by being
told so.

A notification (`POST /api/payments/{adapter}/notify`) is verified (signature over
`timestamp\\nnonce\\nbody`, a timestamp window, the AES-GCM resource) and becomes the
game's `on="payment"` command, keyed by the notification's id: the same notification
twice is answered once, and a game takes a payment's word once whatever its order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from actors.answers import Answer
from actors.client import ShardClient
from actors.paygate import (
    Notification,
    NotificationRefused,
    PaymentError,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
    now_ms,
)
from actors.paysandbox import PaidAsk
from actors.sandbox_books import SandboxBooks
from actors.sandbox_signer import SandboxSigner, SignerDown
from games import payments
from games.registry import GAMES
from server.errors import ApiError
from server.outcomes import Encoded, Outcome, decoded, result_of
from storage.config import Config

log = logging.getLogger("fission.payments")

class Ledger(Protocol):
    """What the desk asks of the pipeline (actors.pipeline_client.PipelineClient)."""

    async def give_back(self, campaign: str, payment: str, payer: str, amount: int
                        ) -> Answer: ...

    async def refund_outcome(self, refund_id: str, status: str) -> Answer: ...


# Who a provider's word is sent as (an owner remembers answers by user and key).
PROVIDER_USER = "provider"
# How a pending payment reads in an owner's compact answer (games.payments.view).
_PENDING = '"status":"pending"'



class PayDesk:
    """The server's side of payments, over one provider: the sandbox (its books in
    Postgres) or WeChat Pay."""

    def __init__(self, config: Config, provider: PaymentGateway, client: ShardClient,
                 pipeline: Ledger | None = None) -> None:
        self.config = config
        # The one writer of money tables: refunds' outcomes and money given back.
        self.pipeline = pipeline
        self.provider = provider
        self.client = client
        # Only the sandbox's payer can pay within the command.
        self.immediate = (isinstance(provider, SandboxBooks)
                          and config.pipeline.sandbox_pays == "immediate")
        self.adapter = provider.name
        # The sandbox's notifications of what its payer paid (at once, or when asked),
        # signed in processes of their own, started at the first: the provider's work,
        # off the gateway's event loop. Paid on request (demos, tests of held seats),
        # one process is plenty.
        self._signer = (SandboxSigner(provider.signer, None if self.immediate else 1)
                        if isinstance(provider, SandboxBooks) else None)

    async def close(self) -> None:
        """End the sandbox's signing process, if one was started."""
        if self._signer is not None:
            await self._signer.close()

    async def settle(self, user: str, campaign: str, result: Outcome) -> Outcome:
        """`result` of a paying method, with its pending payment created at the provider
        and what the client needs to pay it; with the sandbox paying at once, the game's
        answer once the sandbox's notification of that payment was delivered."""
        if isinstance(result, Encoded) and _PENDING not in result.text:
            # Nothing to create (a refusal's answer, or nothing left to pay): passed on as
            # the owner wrote it, not decoded and encoded again on the join's path.
            return result
        answer = decoded(result)
        payment = answer.get("payment")
        if not isinstance(payment, dict) or payment.get("status") != "pending":
            return answer
        found = self.config.campaign(campaign)
        title = found.title if found is not None else campaign
        expires_at = int(datetime.fromisoformat(str(payment["expires_at"])).timestamp() * 1000)
        if expires_at <= now_ms():
            return answer  # its hold has ended (the provider is being asked): nothing to pay
        request = PaymentRequest(
            payment_id=str(payment["id"]), user=user, amount=int(payment["amount"]),
            description=title[:127], expires_at=expires_at)
        try:
            if self.immediate:
                assert isinstance(self.provider, SandboxBooks)
                ask = await self.provider.pay_at_once(request)
                headers, body = await self._signed(ask)
                return await self._deliver(self.adapter, headers, body)
            params = await self.provider.create(request)
        except PaymentError as exc:
            if exc.code in ("ORDERPAID", "ORDER_CLOSED"):
                # Paid already (a repeat of the join: its word is coming), or its time
                # ran out as it was asked (the hold's end asks the provider).
                return answer
            log.warning("creating payment %s failed: %s", request.payment_id, exc)
            raise ApiError("payment_failed",
                           "the payment could not be created; try again") from None
        except OSError as exc:  # the provider unreachable: the client retries, same key
            log.warning("creating payment %s failed: %r", request.payment_id, exc)
            raise ApiError("payment_failed",
                           "the payment could not be created; try again") from None
        payment["params"] = params.wire()
        return answer

    async def notify(self, adapter: str, headers: Mapping[str, str], body: bytes
                     ) -> dict[str, Any]:
        """Take a provider's notification: verified, then told to the payment's game;
        the game's answer (`{}` for what concerns no game, such as a refund's outcome)."""
        return decoded(await self._deliver(adapter, headers, body))

    async def prepay(self, user: str, campaign: str, parts: tuple[str, ...], amount: int
                     ) -> tuple[str, int]:
        """With the sandbox paying at once, for a paying command whose amount is the
        campaign's (games.core.Method.prepaid): the payment it is to be paid by, named
        from what it pays for (`parts`: the method, its instance, the caller's key; so a
        retry names the same one), and the amount the sandbox's notification of its
        payer's payment says was paid: the notification signed by the sandbox and
        verified as the notify route verifies it. The command carries that word and its
        game seats the payer at once (a refused command took nothing: the sandbox's
        books record a payment with the order it makes, in the pipeline's transaction)."""
        payment = payments.payment_id(campaign, "prepaid", user, *parts)
        now = now_ms()
        headers, body = await self._signed(PaidAsk(payment, amount, now=now, at=now, payer=user))
        notification = self._verified(self.adapter, headers, body)
        if notification.status is not PaymentStatus.PAID or notification.payment_id != payment:
            raise ApiError("payment_failed", "the payment could not be made; try again")
        return payment, notification.amount

    async def _signed(self, ask: PaidAsk) -> tuple[dict[str, str], bytes]:
        """The sandbox's notification of `ask`, rendered by its signing processes."""
        assert self._signer is not None
        try:
            return await self._signer.render_paid(ask)
        except SignerDown as exc:
            log.warning("signing the notification of payment %s failed: %s",
                        ask.payment_id, exc)
            raise ApiError("payment_failed", "the payment could not be made; try again"
                           ) from None

    def _verified(self, adapter: str, headers: Mapping[str, str], body: bytes
                  ) -> Notification:
        """A notification checked (signature, timestamp window, resource), or ApiError."""
        if adapter != self.adapter:
            raise ApiError("not_found", f"no payment adapter {adapter!r}")
        try:
            return self.provider.verify(headers, body, now_ms())
        except NotificationRefused as exc:
            log.warning("notification refused: %s", exc)
            raise ApiError("invalid_notification", f"notification refused: {exc.reason}"
                           ) from None

    def _told(self, campaign: str, notification: Notification) -> dict[str, Any]:
        """The command telling `campaign`'s game that a payment of it was paid, keyed by
        the notification (the same notification twice is answered once)."""
        found = self.config.campaign(campaign)
        method = None if found is None else next(
            (m.name for m in GAMES[found.kind].methods if m.on == "payment"), None)
        if method is None:
            log.warning("notification for unknown payment %s", notification.payment_id)
            raise ApiError("not_found", f"no payment {notification.payment_id}")
        return {"method": method, "campaign": campaign, "user": PROVIDER_USER,
                "key": f"n:{notification.notification_id}",
                "params": {"payment": notification.payment_id, "outcome": "paid",
                           "amount": notification.amount}}

    async def _deliver(self, adapter: str, headers: Mapping[str, str], body: bytes
                       ) -> Outcome:
        """`notify`, the game's answer passed on as its owner wrote it."""
        notification = self._verified(adapter, headers, body)
        if notification.refund_id is not None:
            # Refunds are ours to ask for (actors.refunds); the provider tells how one
            # ended (WeChat accepts a refund as processing, then notifies).
            log.info("refund %s is %s", notification.refund_id, notification.refund_status)
            status = notification.refund_status
            if self.pipeline is not None and status is not None and status.value in (
                    "succeeded", "closed", "abnormal"):
                decoded(result_of(await self.pipeline.refund_outcome(
                    notification.refund_id, status.value)))
            return {}
        if notification.status is not PaymentStatus.PAID:
            return {}
        campaign = payments.campaign_of(notification.payment_id,
                                        [c.id for c in self.config.campaigns])
        if campaign is None:
            log.warning("notification for unknown payment %s", notification.payment_id)
            raise ApiError("not_found", f"no payment {notification.payment_id}")
        reply = await self.client.call(self._told(campaign, notification))
        try:
            return result_of(reply)
        except ApiError as exc:
            if exc.code != "not_found":
                raise
            # Money for a payment its game no longer holds (a campaign let go of after
            # its end): nothing can seat it, so it goes back whole, once.
            if self.pipeline is not None and notification.amount > 0:
                decoded(result_of(await self.pipeline.give_back(
                    campaign, notification.payment_id, notification.payer or "unknown",
                    notification.amount)))
            return {}

    async def sandbox_pay(self, user: str, payment_id: str) -> dict[str, Any]:
        """The sandbox's payer `user` pays `payment_id` now (`on_request` mode)."""
        books = self.provider
        if not isinstance(books, SandboxBooks) or not payments.campaign_of(
                payment_id, [c.id for c in self.config.campaigns]):
            raise ApiError("not_found", f"no payment {payment_id!r}")
        payer = await books.payer(payment_id)
        if payer is None:
            raise ApiError("not_found", f"no payment {payment_id!r}")
        if payer != user:
            raise ApiError("forbidden", "only its payer may pay this payment")
        try:
            ask = await books.pay(payment_id)
        except PaymentError as exc:
            raise ApiError("payment_closed", f"payment {payment_id} cannot be paid: {exc.code}"
                           ) from None
        return await self.notify(self.adapter, *await self._signed(ask))
