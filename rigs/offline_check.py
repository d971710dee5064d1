"""``python -m rigs.offline_check reports/html/index.html``: prove the HTML report makes no
network request when it is opened.

Headless Chromium opens the file with every request that is not a local file sent to a proxy
this module runs on loopback, which answers none of them (403) and logs each one (method and
URL); name resolution is switched off as well, so nothing leaves the machine whatever the page
tries.  Chromium's own background traffic (component updates, metrics, sync) is switched off
by its flags.  The page is given time to run its scripts (virtual time), and its DOM is dumped
to check that it really rendered (an empty page makes no request either).  Exit 0 when no
request was made and the page rendered, 1 otherwise, with each request listed.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rigs.errors import ConfigError, NoResponse, RigError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOAD_BOUND = 90.0
"""Longest a browser may take to load, run and dump the page (s)."""
REQUEST_LINE_BOUND = 2.0
CHROMIUM_QUIET = (
    "--headless=old", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--no-default-browser-check", "--disable-default-apps",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
    "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater",
    "--metrics-recording-only", "--no-pings", "--dns-prefetch-disable",
)


@dataclass
class SinkProxy:
    """An HTTP proxy on loopback that refuses every request and remembers it."""

    requests: list[str] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._sock is not None, "start() first"
        return int(self._sock.getsockname()[1])

    def start(self) -> SinkProxy:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="sink-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(REQUEST_LINE_BOUND)
                try:
                    head = conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    head = "(no request line within the bound)"
                with self._lock:
                    self.requests.append(head or "(empty request)")
                try:
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass


@dataclass(frozen=True)
class Verdict:
    page: Path
    requests: tuple[str, ...]
    """What the page (and its workers) tried to fetch from outside: each blocked."""
    rendered: bool
    text_chars: int
    browser_own: tuple[str, ...] = ()
    """The browser's own background requests (not the page's), sunk by the proxy."""

    @property
    def ok(self) -> bool:
        return self.rendered and not self.requests

    def describe(self) -> str:
        lines = [f"{self.page}: " + (f"{len(self.requests)} outside request(s) blocked"
                                     if self.requests else "no network request")]
        lines += [f"  blocked: {r}" for r in self.requests]
        if not self.rendered:
            lines.append(f"  the page did not render ({self.text_chars} characters of text "
                         "without the expected one): the check proves nothing")
        if self.browser_own:
            lines.append(f"  ({len(self.browser_own)} request(s) of the browser itself, not "
                         "the page's, went to the sink proxy and nowhere else)")
        return "\n".join(lines)


def find_browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(f"no headless browser found (looked for {', '.join(BROWSERS)}): "
                      "apt-get install chromium")


class CdpPipe:
    """The Chrome DevTools Protocol over ``--remote-debugging-pipe``: JSON messages ended by a
    NUL byte, the browser reading fd 3 and writing fd 4.  Every wait is bounded."""

    def __init__(self, exe: str, args: list[str]) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: its fds 3 and 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen([exe, *args, "--remote-debugging-pipe"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=wire,
                                     pass_fds=(3, 4))  # kept after the wiring above
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> int:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        except OSError as exc:
            raise RigError(f"the browser's DevTools pipe is closed ({exc.strerror}): "
                           f"{self._stderr_tail()}") from None
        return self._next

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, *, bound: float = 10.0) -> dict[str, Any]:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + bound
        while True:
            msg = self.read(deadline - time.monotonic())
            if msg is None:
                raise NoResponse(f"the browser did not answer {method} within {bound:.0f} s")
            if msg.get("id") == wanted:
                if "error" in msg:
                    raise RigError(f"the browser refused {method}: {msg['error']}")
                return dict(msg.get("result") or {})
            if "method" in msg:
                self.events.append(msg)

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when none came within *timeout*."""
        deadline = time.monotonic() + max(0.0, timeout)
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                raise RigError("the browser closed its DevTools pipe (it exited: "
                               f"{self._stderr_tail()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return dict(json.loads(raw))

    def close(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "still running"
        return self.proc.stderr.read().decode(errors="replace")[-300:]


LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:",
                 "devtools:")
SETTLE_S = 2.0
"""After the load event, the page is watched until it made no request for this long."""


def check(page: Path, *, expect: str = "", browser: str | None = None,
          bound: float = LOAD_BOUND) -> Verdict:
    """Open *page* in headless Chromium and intercept every request the page (and its
    workers) makes: local ones (file:, data:, blob:) go on, any other is blocked and listed.
    The browser's own traffic goes to a proxy on loopback that answers nothing, so nothing
    leaves the machine either way.  *expect*: a text the rendered page must contain."""
    page = page.resolve()
    if not page.is_file():
        raise ConfigError(f"{page}: no such report page")
    exe = browser or find_browser()
    proxy = SinkProxy().start()
    blocked: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="posrig-offline-",
                                         ignore_cleanup_errors=True) as profile:
            cdp = CdpPipe(exe, [*CHROMIUM_QUIET, f"--user-data-dir={profile}",
                                f"--proxy-server=http://127.0.0.1:{proxy.port}",
                                "--proxy-bypass-list=<-loopback>",
                                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                                "about:blank"])
            try:
                text = _visit(cdp, page, blocked, bound)
            finally:
                cdp.close()
    finally:
        proxy.stop()
    rendered = len(text) > 20 and (not expect or expect in text)
    return Verdict(page, tuple(blocked), rendered, len(text), tuple(proxy.seen()))


def _visit(cdp: CdpPipe, page: Path, blocked: list[str], bound: float) -> str:
    deadline = time.monotonic() + bound
    # The first call waits for the browser to start as well (a cold start on a busy machine
    # takes seconds): it gets what is left of the whole bound.
    target = cdp.call("Target.createTarget", {"url": "about:blank"},
                      bound=max(10.0, deadline - time.monotonic()))["targetId"]
    session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"]
    cdp.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, session)
    cdp.call("Page.enable", {}, session)
    cdp.call("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False,
                                      "flatten": True}, session)
    cdp.send("Page.navigate", {"url": page.as_uri()}, session)
    loaded = False
    quiet_since = time.monotonic()
    while True:
        now = time.monotonic()
        if now > deadline:
            raise NoResponse(f"{page}: not loaded and settled within {bound:.0f} s")
        if loaded and now - quiet_since >= SETTLE_S:
            break
        msg = cdp.read(0.2)
        pending = [msg] if msg is not None else []
        pending += cdp.events
        cdp.events.clear()
        for ev in pending:
            method = ev.get("method")
            params = ev.get("params") or {}
            if method == "Page.loadEventFired":
                loaded, quiet_since = True, time.monotonic()
            elif method == "Fetch.requestPaused":
                quiet_since = time.monotonic()
                url = str(params.get("request", {}).get("url", ""))
                sid = ev.get("sessionId")
                if url.startswith(LOCAL_SCHEMES):
                    cdp.send("Fetch.continueRequest", {"requestId": params["requestId"]}, sid)
                else:
                    blocked.append(f"{params.get('request', {}).get('method', '?')} {url}")
                    cdp.send("Fetch.failRequest", {"requestId": params["requestId"],
                                                   "errorReason": "BlockedByClient"}, sid)
            elif method == "Target.attachedToTarget":  # a worker: intercept its requests too
                sid = params.get("sessionId")
                cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*"}]}, sid)
                cdp.send("Runtime.runIfWaitingForDebugger", {}, sid)
    got = cdp.call("Runtime.evaluate", {"expression": "document.body ? document.body.innerText"
                                                      " : ''", "returnByValue": True}, session)
    return str(got.get("result", {}).get("value") or "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rigs.offline_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path, nargs="?", default=Path("reports/html/index.html"))
    parser.add_argument("--expect", default="Allure",
                        help="text the rendered page must contain (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        verdict = check(args.page, expect=args.expect)
    except RigError as exc:
        print(f"offline check: {exc}", file=sys.stderr)
        return 1
    print(verdict.describe())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
