"""Steps about the terminal itself: power, operator login, sign-in (签到)."""

from __future__ import annotations

from pytest_bdd import given, then, when

from protocols.ecr import EventCode, Result
from protocols.faults import FaultKind, FaultSpec
from rigs.bench import Bench
from rigs.capabilities import Capability, needs
from rigs.terminal import Outcome, TerminalStatus

SIGN_IN_BOUND = 20.0


@given("the terminal is powered on and idle", target_fixture="terminal_status")
@given("终端已开机待机", target_fixture="terminal_status")
def terminal_idle(bench: Bench) -> TerminalStatus:
    status = bench.terminal.status()
    assert status.state == "IDLE", f"terminal is {status.state}, not IDLE"
    return status


@needs(Capability.POWER)
@given("the terminal has just been restarted", target_fixture="terminal_status")
@given("终端刚刚重启", target_fixture="terminal_status")
def terminal_restarted(bench: Bench) -> TerminalStatus:
    """Power-cycle the terminal with the supply (working keys are lost with power)."""
    terminal = bench.terminal
    mark = len(terminal.events)
    cut = bench.inject(FaultSpec.of(FaultKind.POWER_CUT))
    bench.clear_fault(cut)
    bound = bench.config.terminal.boot_timeout
    terminal.wait_for_event(EventCode.READY, timeout=bound, since=mark)  # a new boot
    return terminal.wait_ready(timeout=bound)


@given("the operator is logged in")
@given("操作员已登录")
def operator_logged_in(bench: Bench) -> None:
    creds = bench.config.terminal.operators.get("operator")
    assert creds is not None, "the bench file has no terminal.operators.operator credentials"
    outcome = bench.terminal.login(creds.id, creds.password)
    assert outcome.ok, f"operator {creds.id} could not log in: {outcome.result} {outcome.display}"


@given("the terminal is signed in with the acquirer")
@given("终端已签到")
def terminal_signed_in(bench: Bench) -> None:
    if bench.terminal.status().signed_in:
        return
    outcome = bench.terminal.sign_in(timeout=SIGN_IN_BOUND)
    assert outcome.ok, f"sign-in failed: {outcome.result} {outcome.display}"


@when("the operator signs the terminal in with the acquirer", target_fixture="sign_in")
@when("操作员签到", target_fixture="sign_in")
def operator_signs_in(bench: Bench) -> Outcome:
    return bench.terminal.sign_in(timeout=SIGN_IN_BOUND)


@then("the sign-in succeeds")
@then("签到成功")
def sign_in_succeeds(bench: Bench, sign_in: Outcome) -> None:
    assert sign_in.ok, f"sign-in failed: {sign_in.result} ({sign_in.display})"
    assert bench.terminal.status().signed_in, "terminal says it is not signed in after sign-in"


@then("the sign-in fails with a communication error shown on the display")
@then("签到失败并显示通讯错误")
def sign_in_comms_error(sign_in: Outcome) -> None:
    assert not sign_in.ok and sign_in.result == Result.COMMS_ERROR, \
        f"expected COMMS_ERROR, terminal answered {sign_in.result} ({sign_in.display})"
    assert sign_in.display, "the terminal showed nothing about the failure"


@then("the display asks the operator to sign in")
@then("屏幕提示操作员签到")
def display_asks_sign_in(purchase: Outcome) -> None:
    assert "SIGN IN" in purchase.display.upper() or "签到" in purchase.display, \
        f"display shows {purchase.display!r}, no request to sign in"



@needs(Capability.WIRE)
@then("the acquirer received the sign-in and approved it")
@then("收单机构收到签到请求并批准")
def acquirer_approved_sign_in(bench: Bench) -> None:
    """Evidence from the wire, not the terminal's word: one 0800 from this terminal reached the
    host, and the host's 0810 with the same STAN and code 00 reached the terminal."""
    tid = bench.config.terminal.terminal_id
    requests = [m for m in bench.acquirer.received("0800") if tid is None or m.terminal_id == tid]
    assert len(requests) == 1, (f"the acquirer received {len(requests)} sign-in request(s) from "
                                f"terminal {tid} this scenario, expected one")
    stan = requests[0].stan
    answers = [m for m in bench.acquirer.answered("0810") if m.stan == stan]
    assert answers, f"no 0810 answer with STAN {stan} reached the terminal"
    assert answers[-1].response_code == "00", \
        f"the acquirer answered the sign-in with {answers[-1].describe()}"
