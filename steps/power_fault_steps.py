"""Steps that fail the terminal's power and printer through the bench supply and the relay unit:
a battery running flat, a brown-out dip, a current limit too low to boot, a power cycle, a cut
at a protocol moment, paper low or gone in the middle of a receipt, a disconnected printer, and
the power-on self-test that reports them.

Each When returns the index of the terminal's event log at the fault (``fault_mark``) so the
Thens accept only what came after it; the Thens prove from the supply's measurements, the
relay unit's trace and the wire that the terminal met the fault, and from the terminal's events
what it did about it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pytest_bdd import given, then, when

from protocols.ecr import EventCode, FaultCode, PrintStatus, Prompt, ShutdownReason
from protocols.faults import FaultKind, FaultSpec
from rigs.bench import PAPER_NEAR_END, PRINTER_PRESENCE, Bench
from rigs.capabilities import Capability, needs
from rigs.cardholder import PROMPTS
from rigs.errors import NoResponse, RigError
from rigs.events import Event, Source, matching
from rigs.faults import FaultRecord
from rigs.terminal import Outcome, TerminalEvent
from rigs.triggers import on_apdu, on_mti, on_terminal
from steps.parsers import step
from steps.terminal_steps import operator_logged_in, terminal_signed_in

EVENT_BOUND = 5.0
SAMPLE_BOUND = 3.0
"""Longest wait (s) for the supply's next samples (every 100 ms during a scenario)."""
OFF_AMPS = 0.01
"""At most this current (A): the terminal draws nothing (off, or shut itself down)."""
POWER_CYCLE_MS = 500.0
SILENT_BOUND = 3.0
"""How long the terminal is given to answer STATUS before it counts as not answering (s)."""


def _mark(bench: Bench) -> int:
    return len(bench.terminal.events)


def _ramp_bound(from_volts: float, to_volts: float, volts_per_s: float) -> float:
    return abs(from_volts - to_volts) / volts_per_s + 5.0


def _samples_after(bench: Bench, t: float, check: Callable[[Event], bool], what: str) -> Event:
    """The first supply sample at or after *t* that *check* accepts (bounded by SAMPLE_BOUND)."""
    def ok(ev: Event) -> bool:
        return ev.source is Source.POWER and ev.kind == "sample" and ev.t >= t and check(ev)
    return bench.events.wait_for(ok, SAMPLE_BOUND, what=what)


def _amps(ev: Event) -> float:
    value = ev.data.get("amps")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _volts(ev: Event) -> float:
    value = ev.data.get("volts")
    return float(value) if isinstance(value, (int, float)) else float("nan")


# -- the battery runs flat (TS-15) ---------------------------------------------------------------
@needs(Capability.POWER)
@when(step("the battery runs down to {volts:Number} V at {rate:Number} V per second"),
      target_fixture="fault_mark")
@when(step("the battery runs down further to {volts:Number} V at {rate:Number} V per second"),
      target_fixture="fault_mark")
@when(step("电池以每秒{rate:Number}伏的速度放电到{volts:Number}伏"), target_fixture="fault_mark")
def battery_runs_down(bench: Bench, volts: float, rate: float) -> int:
    mark = _mark(bench)
    start = bench.power.measure_voltage()
    bench.inject(FaultSpec.of(FaultKind.BATTERY_DISCHARGE, to_volts=volts, volts_per_s=rate))
    bench.power.wait_ramp(_ramp_bound(start, volts, rate))
    return mark


@needs(Capability.POWER)
@then("the terminal shuts itself down because its battery is empty")
@then("终端因电量耗尽自动关机")
def shuts_down_empty(bench: Bench, fault_mark: int) -> None:
    bound = bench.config.terminal.boot_timeout
    ev = bench.terminal.wait_for_event(EventCode.SHUTDOWN, timeout=bound, since=fault_mark)
    assert FaultCode.BATTERY_CRITICAL in ev.faults, \
        f"the shutdown did not name the battery's fault code: {ev.faults}"
    assert "BATTERY EMPTY" in ev.text or ShutdownReason.CUTOFF in ev.text, ev.text


@needs(Capability.POWER)
@then("the supply measured the terminal drawing no current after it shut down")
@then("电源测得终端关机后不再耗电")
def no_current_after_shutdown(bench: Bench) -> None:
    down = bench.events.find(matching(source=Source.TERMINAL, name=EventCode.SHUTDOWN))
    assert down is not None, "no SHUTDOWN event in the timeline"
    sample = _samples_after(bench, down.t, lambda ev: _amps(ev) <= OFF_AMPS,
                            what=f"supply sample of at most {OFF_AMPS} A after the shutdown")
    assert _volts(sample) > 6.0, f"the rail was at {_volts(sample):.2f} V: the supply, not the " \
                                 f"terminal, switched off"


@needs(Capability.POWER)
@when("the battery is charged again", target_fixture="fault_mark")
@when("电池重新充电", target_fixture="fault_mark")
def battery_charged(bench: Bench) -> int:
    return _put_right(bench, FaultKind.BATTERY_DISCHARGE, FaultKind.SUPPLY_SAG)


def _put_right(bench: Bench, *kinds: FaultKind) -> int:
    """Clear the active faults of *kinds* (at least one must be); the terminal's event mark."""
    mark = _mark(bench)
    cleared = bench.clear_faults(*kinds)
    assert cleared, f"none of {', '.join(k.value for k in kinds)} was active"
    return mark


@then("the terminal starts again by itself")
@then("终端自动重新启动")
def starts_again(bench: Bench, fault_mark: int) -> None:
    bound = bench.config.terminal.boot_timeout
    bench.terminal.wait_for_event(EventCode.READY, timeout=bound, since=fault_mark)
    bench.terminal.wait_ready(timeout=bound)


@when("the operator logs in and signs the terminal in again")
@when("操作员重新登录并签到")
def log_in_and_sign_in_again(bench: Bench) -> None:
    operator_logged_in(bench)
    terminal_signed_in(bench)


# -- brown-out dip, hang, power cycle (TS-18) -----------------------------------------------------
@needs(Capability.POWER)
@when(step("the supply dips to {volts:Number} V for {ms:d} milliseconds"),
      target_fixture="fault_mark")
@when(step("电源电压跌落到{volts:Number}伏持续{ms:d}毫秒"), target_fixture="fault_mark")
def supply_dips(bench: Bench, volts: float, ms: int) -> int:
    mark = _mark(bench)
    bench.inject(FaultSpec.of(FaultKind.BROWNOUT_DIP, volts=volts, ms=float(ms)))
    return mark


@needs(Capability.POWER)
@then(step("the supply's trace shows the dip to {volts:Number} V and back"))
@then(step("电源记录显示电压跌落到{volts:Number}伏后恢复"))
def trace_shows_dip(bench: Bench, volts: float) -> None:
    sets = bench.events.events(matching(source=Source.POWER, kind="set", name="voltage"))
    values = [float(v) for e in sets if isinstance(v := e.data.get("voltage"), (int, float))]
    assert volts in values, f"no setpoint at {volts} V in the supply's trace: {values}"
    after = values[values.index(volts) + 1:]
    assert after and after[0] > volts, f"the supply did not come back after the dip: {values}"


@then("the terminal no longer answers")
@then("终端不再响应")
def terminal_silent(bench: Bench) -> None:
    try:
        status = bench.terminal.status(timeout=SILENT_BOUND)
    except RigError:
        pass
    else:
        raise AssertionError(f"the terminal still answers: state {status.state}")
    # Outside its word: it still draws current, so it is on and hung, not off.
    now = time.time()
    _samples_after(bench, now, lambda ev: _amps(ev) > OFF_AMPS,
                   what=f"supply sample above {OFF_AMPS} A (the hung terminal still powered)")


@needs(Capability.POWER)
@when("the terminal is switched off and on again", target_fixture="fault_mark")
@when("终端断电后重新上电", target_fixture="fault_mark")
def power_cycled(bench: Bench) -> int:
    mark = _mark(bench)
    bench.inject(FaultSpec.of(FaultKind.POWER_CYCLE, off_ms=POWER_CYCLE_MS))
    return mark


# -- cannot power on (TS-14) -----------------------------------------------------------------------
@needs(Capability.POWER)
@given(step("the supply's current limit is lowered to {amps:Number} A"))
@given(step("电源限流降到{amps:Number}安"))
def current_limit_low(bench: Bench, amps: float) -> None:
    bench.inject(FaultSpec.of(FaultKind.CURRENT_LIMIT, amps=amps))


@needs(Capability.POWER)
@given(step("the supply is set to {volts:Number} V"))
@given(step("电源电压设为{volts:Number}伏"))
def supply_set(bench: Bench, volts: float) -> None:
    bench.inject(FaultSpec.of(FaultKind.SUPPLY_SAG, volts=volts))


@needs(Capability.POWER)
@when("the supply is set right again", target_fixture="fault_mark")
@when("电源设置恢复正常", target_fixture="fault_mark")
def supply_fixed(bench: Bench) -> int:
    return _put_right(bench, FaultKind.CURRENT_LIMIT, FaultKind.SUPPLY_SAG)


@then("the terminal does not start within its boot time")
@then("终端在启动时限内无法启动")
def does_not_start(bench: Bench, fault_mark: int) -> None:
    bound = bench.config.terminal.boot_timeout
    try:
        ev = bench.terminal.wait_for_event(EventCode.READY, timeout=bound, since=fault_mark)
    except NoResponse:
        return
    raise AssertionError(f"the terminal started ({ev.text!r}) although it should not")


@needs(Capability.POWER)
@then("the supply measured the rail collapsing below the terminal's brown-out as it tried")
@then("电源测得终端启动时电压跌落到欠压点以下")
def rail_collapsed(bench: Bench) -> None:
    limit = [r for r in bench.faults.records() if r.kind is FaultKind.CURRENT_LIMIT]
    since = limit[-1].armed if limit else 0.0
    brownout = 6.0
    collapsed = [e for e in bench.events.events(matching(source=Source.POWER, kind="sample"))
                 if e.t >= since and _volts(e) < brownout]
    assert collapsed, (f"no supply sample below {brownout:.2f} V since the fault: the terminal "
                       f"never drew more than the limit")
    if limit:
        amps = float(limit[-1].spec.params["amps"])
        held = [e for e in collapsed if abs(_amps(e) - amps) <= 0.05 * amps + 0.005]
        assert held, f"the collapsed samples were not at the current limit of {amps} A"


@needs(Capability.POWER)
@then("the supply measured the rail below the terminal's brown-out and no current drawn")
@then("电源测得电压低于欠压点且终端不耗电")
def rail_below_brownout(bench: Bench) -> None:
    now = time.time()
    _samples_after(bench, now, lambda ev: _volts(ev) < 6.0 and _amps(ev) <= OFF_AMPS,
                   what="supply sample below 6.00 V drawing no current")


# -- power lost at a protocol moment (TS-16) ----------------------------------------------------
@needs(Capability.POWER, Capability.CARDS)
@given("the power will be cut as the terminal asks the card for its cryptogram")
@given("终端向卡片请求密文时将断电")
def cut_at_generate_ac(bench: Bench) -> FaultRecord:
    return bench.arm(FaultSpec.of(FaultKind.POWER_CUT),
                     on_apdu("GENERATE AC", text="as the terminal asks the card for its "
                                                 "cryptogram (GENERATE AC)"))


@needs(Capability.POWER, Capability.CARDS)
@when(step("the cardholder starts paying {amount:Amount} by chip with the good card"),
      target_fixture="fault_mark")
def starts_paying(bench: Bench, amount: int) -> int:
    """Start a sale, insert the card and type the PIN as asked, until the armed cut fires."""
    from protocols.transactions import TxnType

    terminal = bench.terminal
    mark = _mark(bench)
    terminal.start_transaction(TxnType.SALE, amount)
    since = mark
    deadline = time.monotonic() + 30.0
    try:
        while not any(r.kind is FaultKind.POWER_CUT and r.fired for r in bench.faults.records()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoResponse("the armed power cut did not fire within 30 s of the sale")
            try:
                got = terminal.wait_for_prompt_or_outcome(PROMPTS, timeout=min(left, 1.0),
                                                          since=since)
            except NoResponse:
                continue
            if isinstance(got, Outcome):
                raise AssertionError(f"the sale ended ({got.result}) before the power cut")
            index, prompt = got
            since = index + 1
            if prompt.code == Prompt.INSERT_CARD:
                bench.cards.insert("good")
            elif prompt.code == Prompt.ENTER_PIN:
                terminal.enter_pin(bench.card_pin("good"))
    finally:
        if bench.cards.inserted is not None:
            bench.cards.remove()
    return mark


@needs(Capability.POWER, Capability.CARDS)
@then("the supply switched off right after the terminal's cryptogram request to the card")
@then("电源在终端向卡片请求密文后立即断电")
def cut_after_generate_ac(bench: Bench) -> None:
    gac = bench.events.find(matching(source=Source.CARDS, kind="c-apdu", name="GENERATE AC"))
    assert gac is not None, "the terminal never sent GENERATE AC to the card"
    off = bench.events.find(lambda e: e.source is Source.POWER and e.kind == "set"
                            and e.name == "output" and e.data.get("output") == 0.0)
    assert off is not None, "the supply's trace has no output off"
    assert off.seq > gac.seq and off.t - gac.t < 1.0, \
        f"the output went off {off.t - gac.t:.3f} s after GENERATE AC"


@then("the terminal's journal has no record of that sale")
@then("终端流水中没有这笔交易")
def journal_has_no_sale(bench: Bench, terminal_status: object) -> None:
    before = getattr(terminal_status, "journal_entries", None)
    status = bench.terminal.status()
    assert before is not None and status.journal_entries == before, \
        f"the journal had {before} entries before the sale and has {status.journal_entries}"


# -- printer: paper low, paper out mid-receipt, printer missing (TS-10, TS-11) ------------------
@needs(Capability.PAPER_SENSOR)
@given("the paper will run out as soon as the first copy of the next receipt is printed")
@given("下一张签购单第一联打印后打印纸将用完")
def paper_out_after_first_copy(bench: Bench) -> FaultRecord:
    return bench.arm(FaultSpec.of(FaultKind.PAPER_OUT),
                     on_terminal("PRINT", text="as soon as the first copy is printed"))


@then("the purchase is approved but its receipt is incomplete")
@then("交易成功但签购单打印不完整")
def approved_incomplete(purchase: Outcome) -> None:
    assert purchase.ok and purchase.response_code == "00", \
        f"purchase not approved: {purchase.result} {purchase.display!r}"
    printed = purchase.fields.get("print")
    assert printed == PrintStatus.INCOMPLETE, f"print status {printed!r}, expected INCOMPLETE"


@needs(Capability.PAPER_SENSOR)
@then("the paper ran out between the merchant copy and the customer copy")
@then("打印纸在商户联和持卡人联之间用完")
def paper_out_between_copies(bench: Bench) -> None:
    prints = bench.events.events(matching(source=Source.TERMINAL, name="PRINT"))
    closed = bench.events.events(matching(source=Source.SWITCH, kind="relay", name="close"))
    assert prints and closed, f"{len(prints)} copies printed, {len(closed)} relay closures"
    assert len(prints) == 1, f"{len(prints)} copies printed before the paper ran out"
    assert closed[0].seq > prints[0].seq, "the paper sensor was shunted before the first copy"


@needs(Capability.PAPER_SENSOR)
@when("paper is loaded into the printer again", target_fixture="fault_mark")
def paper_reloaded(bench: Bench) -> int:
    return _put_right(bench, FaultKind.PAPER_OUT)


@then("the rest of the receipt is printed, marked as continued")
@then("签购单剩余部分打印出来并标明续打")
def rest_printed(bench: Bench, fault_mark: int) -> None:
    ev = bench.terminal.wait_for_event("PRINT", timeout=EVENT_BOUND * 2, since=fault_mark)
    assert "CONTINUED" in ev.text, f"the copy printed after reloading is not marked: {ev.text!r}"
    assert "CUSTOMER" in ev.text.upper() or "持卡人" in ev.text, "the owed copy is not the " \
                                                               "customer's"


@needs(Capability.PAPER_SENSOR)
@when("the printer's paper runs low", target_fixture="fault_mark")
@when("打印纸将用完", target_fixture="fault_mark")
def paper_runs_low(bench: Bench) -> int:
    mark = _mark(bench)
    bench.inject(FaultSpec.of(FaultKind.PAPER_LOW))
    return mark


@then("the terminal warns that the paper is running low")
@then("终端提示纸将用完")
def warns_paper_low(bench: Bench, fault_mark: int) -> None:
    ev = bench.terminal.wait_for_event(EventCode.PAPER_LOW, timeout=EVENT_BOUND,
                                       since=fault_mark)
    assert FaultCode.PAPER_LOW in ev.faults, f"no fault code {FaultCode.PAPER_LOW} on {ev.text!r}"
    assert bench.switch.is_closed(bench.sensor_channel(PAPER_NEAR_END)), \
        "the near-end sensor's relay is open: the warning came from elsewhere"


@needs(Capability.PAPER_SENSOR)
@given("the printer is disconnected")
@given("打印机未连接")
def printer_disconnected(bench: Bench) -> None:
    bench.inject(FaultSpec.of(FaultKind.PRINTER_DISCONNECTED))


@needs(Capability.PAPER_SENSOR)
@given("the printer has no paper")
@given("打印机没有纸")
def printer_no_paper(bench: Bench) -> None:
    bench.inject(FaultSpec.of(FaultKind.PAPER_OUT))


@when("the fault is put right")
@when("故障排除")
def fault_put_right(bench: Bench) -> None:
    _put_right(bench, FaultKind.PRINTER_DISCONNECTED, FaultKind.PAPER_OUT, FaultKind.SUPPLY_SAG)


# -- the power-on self-test (OP-01, TS-17) ----------------------------------------------------------
def _self_test(bench: Bench, since: int) -> TerminalEvent:
    """The self-test's verdict: READY (with its fault codes) or a SHUTDOWN (too low to start)."""
    bound = bench.config.terminal.boot_timeout
    verdicts = (EventCode.READY, EventCode.SHUTDOWN)
    deadline = time.monotonic() + bound
    while True:
        for ev in bench.terminal.events[since:]:
            if ev.code in verdicts:
                return ev
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoResponse(f"no self-test verdict (READY or SHUTDOWN) within {bound:.0f} s "
                             f"(terminal.boot_timeout)")
        mark = bench.events.mark()
        try:
            bench.events.wait_for(matching(source=Source.TERMINAL, name=set(verdicts)),
                                  min(left, 1.0), since=mark)
        except NoResponse:
            continue


@then(step("the self-test reports fault code {code}"))
@then(step("开机自检报告故障代码{code}"))
def self_test_reports(bench: Bench, fault_mark: int, code: str) -> None:
    expected = FaultCode(code)
    verdict = _self_test(bench, fault_mark)
    assert expected in verdict.faults, \
        f"the self-test ({verdict.code}) reported {list(verdict.faults)}, not {code}"


@then("the self-test reports no fault")
@then("开机自检无故障")
def self_test_clean(bench: Bench, fault_mark: int) -> None:
    verdict = _self_test(bench, fault_mark)
    assert verdict.code == EventCode.READY and not verdict.faults, \
        f"the self-test ({verdict.code}) reported {list(verdict.faults)}"
    status = bench.terminal.wait_ready(timeout=bench.config.terminal.boot_timeout)
    assert not status.faults, f"STATUS still lists fault codes {status.faults}"


@needs(Capability.PAPER_SENSOR)
@then(step("the relay unit held the printer's {line} line faulted during the self-test"))
def relay_held(bench: Bench, line: str) -> None:
    channel = bench.sensor_channel({"presence": PRINTER_PRESENCE,
                                    "paper": "paper_sensor"}[line])
    assert bench.switch.is_closed(channel), f"relay channel {channel} ({line}) is open"


@needs(Capability.POWER, Capability.NETWORK)
@given("the power will be cut as the purchase request crosses to the acquirer")
@given("消费请求发往收单机构途中终端将断电")
def cut_as_request_crosses(bench: Bench) -> FaultRecord:
    from protocols.transactions import TxnType, transaction_type

    sale = transaction_type(TxnType.SALE)
    return bench.arm(FaultSpec.of(FaultKind.POWER_CUT),
                     on_mti(sale.mti, text=f"as the purchase request ({sale.mti}) crosses the "
                                           f"network"))


@needs(Capability.POWER, Capability.WIRE)
@then("the supply switched off after the purchase request had crossed to the acquirer",
      target_fixture="lost")
@then("消费请求到达收单机构后电源才断电", target_fixture="lost")
def cut_after_request(bench: Bench) -> Outcome:
    seen = bench.events.find(matching(source=Source.NETWORK, kind="seen", name="0200"))
    off = bench.events.find(lambda e: e.source is Source.POWER and e.kind == "set"
                            and e.name == "output" and e.data.get("output") == 0.0)
    assert seen is not None, "the injector never noted the purchase request crossing"
    assert off is not None, "the supply's trace has no output off"
    assert off.t >= seen.t, f"the output went off {seen.t - off.t:.3f} s before the request " \
                            f"crossed"
    got = bench.acquirer.received("0200")
    assert got, "the purchase request never reached the acquirer"
    assert got[-1].t <= off.t + 0.05, "the acquirer got the request only after the cut"
    return Outcome(result="LOST", ok=False, stan=got[-1].stan)


@then("the terminal owes a reversal of that sale")
@then("终端保留该笔交易的待发冲正")
def owes_reversal(bench: Bench, lost: Outcome) -> None:
    status = bench.terminal.status()
    assert status.reversal_pending, f"no reversal pending for STAN {lost.stan} after the restart"
