"""actors.sandbox_signer: the sandbox's notifications signed in a child process, verified
by the gateway's verifier exactly as those signed in process; a dead child fails only
what it was asked and is started again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from actors.paygate import PaymentStatus, now_ms
from actors.paysandbox import PaidAsk, SandboxGateway
from actors.sandbox_signer import SandboxSigner, SignerDown
from games.payments import payment_id


def pay(name: str) -> str:
    """A payment id of the shape the server makes (WeChat's out_trade_no)."""
    return payment_id("c1", "prepaid", name)


async def started(signer: SandboxSigner, now: int) -> asyncio.subprocess.Process:
    """The signer's one child, ready (a cold start is not within a short ask limit), and
    having answered a first ask."""
    await signer.warm()
    await signer.render_paid(PaidAsk(pay("first"), 1, now, now, "u"))
    [process] = signer.processes
    return process


async def ended(signer: SandboxSigner) -> None:
    """Close `signer`, its children killed first: none left stopped by a failed test."""
    for running in signer.processes:
        with contextlib.suppress(ProcessLookupError):
            running.kill()
    await signer.close()


@pytest.fixture(scope="module")
def sandbox() -> SandboxGateway:
    return SandboxGateway()


async def test_what_the_child_signs_verifies_as_the_sandboxs_own(sandbox: SandboxGateway
                                                                 ) -> None:
    signer = SandboxSigner(sandbox)
    try:
        now = now_ms()
        headers, body = await signer.render_paid(PaidAsk(pay("pay-1"), 990, now, now - 5, "u1"))
        told = sandbox.verify(headers, body, now)
        assert (told.payment_id, told.status, told.amount, told.payer) == (
            pay("pay-1"), PaymentStatus.PAID, 990, "u1")
        # The same event as the sandbox renders it in process: the same notification id.
        own_headers, own_body = sandbox.render(pay("pay-1"), PaymentStatus.PAID, 990, now=now,
                                               at=now - 5, payer="u1")
        assert sandbox.verify(own_headers, own_body, now).notification_id == told.notification_id
        assert headers["Wechatpay-Serial"] == own_headers["Wechatpay-Serial"]
    finally:
        await signer.close()


@pytest.mark.parametrize("processes", [1, 3])
async def test_asks_of_one_turn_of_the_loop_go_in_one_frame_a_child_and_answer_in_order(
        sandbox: SandboxGateway, processes: int) -> None:
    signer = SandboxSigner(sandbox, processes=processes)
    try:
        now = now_ms()
        await signer.warm()  # every child started and ready
        await signer.render_paid(PaidAsk(pay("warm"), 1, now, now, "u0"))
        assert len(signer.processes) == processes
        frames = signer.frames
        signed = await asyncio.gather(*(signer.render_paid(PaidAsk(pay(f"p{i}"), 100 + i, now,
                                                                   now, f"u{i}"))
                                        for i in range(50)))
        assert signer.frames == frames + processes  # the 50 split between the children
        told = [sandbox.verify(h, b, now) for h, b in signed]
        assert [(t.payment_id, t.amount, t.payer) for t in told] == [
            (pay(f"p{i}"), 100 + i, f"u{i}") for i in range(50)]
    finally:
        await signer.close()


async def test_a_killed_child_fails_what_it_was_asked_and_is_started_again(
        sandbox: SandboxGateway) -> None:
    signer = SandboxSigner(sandbox, processes=1)
    try:
        now = now_ms()
        process = await started(signer, now)
        # Stopped, the child cannot answer what it is then asked; killed, it never will.
        os.kill(process.pid, signal.SIGSTOP)
        lost = asyncio.ensure_future(signer.render_paid(PaidAsk(pay("lost"), 1, now, now, "u")))
        frames = signer.frames
        await asyncio.sleep(0)  # the ask made: its frame written at the end of the turn
        await asyncio.sleep(0)
        assert signer.frames == frames + 1
        process.kill()
        # What was in flight hears that the signer is down (the join answers
        # payment_failed and its client retries with its key) ...
        with pytest.raises(SignerDown):
            await lost
        # ... and the next ask starts a new child.
        headers, body = await signer.render_paid(PaidAsk(pay("again"), 7, now, now, "u"))
        assert sandbox.verify(headers, body, now).amount == 7
        assert len(signer.processes) == 1 and signer.processes[0] is not process
    finally:
        await ended(signer)


async def test_a_child_that_stops_answering_is_killed_and_its_ask_fails(
        sandbox: SandboxGateway) -> None:
    signer = SandboxSigner(sandbox, processes=1, ask_seconds=0.5)
    try:
        now = now_ms()
        process = await started(signer, now)
        os.kill(process.pid, signal.SIGSTOP)  # alive, never answering
        with pytest.raises(SignerDown):
            await signer.render_paid(PaidAsk(pay("stuck"), 1, now, now, "u"))
        # Stopped, it could only end by being killed (its exit status is not asserted: in
        # a full run another library's waitpid may reap it first, and asyncio says 255).
        async with asyncio.timeout(10):
            await process.wait()
        await signer.warm()  # the new child's cold start is not within the 0.5 s limit
        headers, body = await signer.render_paid(PaidAsk(pay("again"), 5, now, now, "u"))
        assert sandbox.verify(headers, body, now).amount == 5
    finally:
        await ended(signer)


async def test_closed_it_ends_its_child_and_refuses(sandbox: SandboxGateway) -> None:
    signer = SandboxSigner(sandbox)
    now = now_ms()
    await signer.render_paid(PaidAsk(pay("one"), 1, now, now, "u"))
    running = signer.processes
    assert running
    await signer.close()
    assert all(process.returncode is not None for process in running)
    with pytest.raises(SignerDown):
        await signer.render_paid(PaidAsk(pay("two"), 1, now, now, "u"))


async def test_a_ctrl_c_or_sigterm_for_the_gateway_leaves_its_children_signing(
        sandbox: SandboxGateway) -> None:
    # A service manager's SIGTERM reaches every process of the service (and a Ctrl-C
    # would, but for the child's session of its own); the gateway stops gracefully and
    # its joins in flight still need their notifications.
    signer = SandboxSigner(sandbox, processes=1)
    try:
        now = now_ms()
        await signer.render_paid(PaidAsk(pay("before"), 1, now, now, "u"))
        [process] = signer.processes
        os.kill(process.pid, signal.SIGINT)
        os.kill(process.pid, signal.SIGTERM)
        headers, body = await signer.render_paid(PaidAsk(pay("after"), 3, now, now, "u"))
        assert sandbox.verify(headers, body, now).amount == 3
        assert signer.processes == [process] and process.returncode is None
    finally:
        await signer.close()
    assert process.returncode is not None  # closed, it ended with its stdin


# A child that takes its keys and exits before it is ready: the failure of a signer
# broken at start (its interpreter, its libraries, its keys).
_DIES_AT_START = (
    "import struct, sys\n"
    "stream = sys.stdin.buffer\n"
    "stream.read(struct.unpack('>I', stream.read(4))[0])\n"
    "sys.exit(3)\n")


async def test_a_child_dying_before_it_is_ready_is_started_again_only_after_a_pause(
        sandbox: SandboxGateway) -> None:
    seconds = [1000.0]  # the signer's monotonic clock, moved by the test
    signer = SandboxSigner(sandbox, processes=1, clock=lambda: seconds[0],
                           command=(sys.executable, "-c", _DIES_AT_START))
    now = now_ms()

    async def refused() -> None:
        with pytest.raises(SignerDown):
            await signer.render_paid(PaidAsk(pay("p"), 1, now, now, "u"))

    try:
        await refused()
        assert signer.starts == 1
        # Asks meanwhile fail at once: no process is spawned per ask.
        for _ in range(5):
            await refused()
        assert signer.starts == 1
        # The pause doubles with each failure in a row: 0.5 s, then 1 s. (A child killed
        # after it was ready is started again at the next ask: the killed-child test.)
        for pause in (0.5, 1.0):
            start = signer.starts
            seconds[0] += pause - 0.25  # (sums exact in binary floating point)
            await refused()
            assert signer.starts == start  # still pausing
            seconds[0] += 0.25
            await refused()
            assert signer.starts == start + 1
    finally:
        await ended(signer)


async def test_while_one_child_pauses_the_others_sign_and_it_comes_back_after(
        sandbox: SandboxGateway, tmp_path: Path) -> None:
    # The first of the two children to start finds the marker, takes it and fails; the
    # other, and every child after, signs.
    marker = tmp_path / "fail-once"
    marker.touch()
    command = (sys.executable, "-c",
               "import os, runpy, sys\n"
               f"try:\n    os.remove({str(marker)!r})\nexcept FileNotFoundError:\n"
               "    runpy.run_module('actors.sandbox_signer', run_name='__main__')\n"
               "else:\n    sys.exit(3)\n")
    seconds = [1000.0]
    signer = SandboxSigner(sandbox, processes=2, clock=lambda: seconds[0], command=command)
    try:
        now = now_ms()
        await signer.warm()
        assert signer.starts == 2 and len(signer.processes) == 1 and not marker.exists()
        # Asks go to the one that signs, and no start is tried during the pause.
        signed = await asyncio.gather(*(signer.render_paid(PaidAsk(pay(f"p{i}"), 10 + i, now,
                                                                   now, "u"))
                                        for i in range(20)))
        assert [sandbox.verify(h, b, now).amount for h, b in signed] == [
            10 + i for i in range(20)]
        assert signer.starts == 2
        # After the pause it is started again (the next ask begins that in the
        # background, the other child signing the ask; warm waits for it), and then
        # both sign.
        seconds[0] += 0.5
        await signer.render_paid(PaidAsk(pay("later"), 1, now, now, "u"))
        await signer.warm()
        assert signer.starts == 3 and len(signer.processes) == 2
        frames = signer.frames
        await asyncio.gather(*(signer.render_paid(PaidAsk(pay(f"q{i}"), 1, now, now, "u"))
                               for i in range(10)))
        assert signer.frames == frames + 2  # both children took a share
    finally:
        await ended(signer)
