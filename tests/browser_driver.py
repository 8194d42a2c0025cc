"""A small headless-Chromium driver over the DevTools protocol, for the browser tests.

Chromium comes from the distribution's packages (Debian: ``apt-get install chromium``; .ci/run
installs it when missing). The driver starts it with a fresh profile and
``--remote-debugging-port=0``, reads the DevTools websocket address Chromium prints, opens
one page target and talks to it over aiohttp's websocket client (no other dependency)::

    async with Browser.launch() as browser:
        page = await browser.new_page()
        await page.goto(url)
        assert await page.evaluate("1 + 1") == 2
        png = await page.screenshot()

WebRTC: Chromium hides a page's host candidates behind mDNS ``.local`` names that aioice
cannot resolve; ``--disable-features=WebRtcHideLocalIpsWithMdns`` makes it offer plain
addresses, and ``--allow-loopback-in-peer-connection`` lets it offer and use 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

__all__ = ["Browser", "BrowserError", "Page", "find_chromium"]

#: Executables tried, in order (NETCODE_CHROMIUM overrides).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--password-store=basic",
    "--use-mock-keychain",
    "--remote-debugging-port=0",
    # WebRTC: plain host candidates (aioice cannot resolve mDNS names), loopback allowed
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    "--window-size=1024,720",
)

_DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")


class BrowserError(Exception):
    """Chromium failed, or a page raised."""


def find_chromium() -> str | None:
    """The Chromium executable to use, or None if none is installed."""
    chosen = os.environ.get("NETCODE_CHROMIUM")
    if chosen:
        return shutil.which(chosen) or (chosen if os.path.exists(chosen) else None)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process and its DevTools connection."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        profile: tempfile.TemporaryDirectory[str],
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
    ) -> None:
        self.process = process
        self._profile = profile
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())
        #: Chromium's stderr, for failure messages
        self.log: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls, executable: str | None = None, *, timeout: float = 30.0
    ) -> AsyncIterator[Browser]:
        """Start Chromium; closes it (and deletes its profile) on exit."""
        path = executable or find_chromium()
        if path is None:
            raise BrowserError("no Chromium found (apt-get install chromium)")
        profile = tempfile.TemporaryDirectory(prefix="netcode-chromium-")
        process = await asyncio.create_subprocess_exec(
            path,
            *FLAGS,
            f"--user-data-dir={profile.name}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: closing ends every child
        )
        http = aiohttp.ClientSession()
        browser: Browser | None = None
        try:
            address = await asyncio.wait_for(_devtools_address(process), timeout)
            ws = await http.ws_connect(address, max_msg_size=256 * 1024 * 1024)
            browser = cls(process, profile, http, ws)
            yield browser
        finally:
            if browser is not None:
                await browser._close()
            await http.close()
            _kill_group(process)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            profile.cleanup()

    async def new_page(self) -> Page:
        """A new tab, attached."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"], target["targetId"])
        self._pages[page.session_id] = page
        await page.send("Runtime.enable")
        await page.send("Page.enable")
        return page

    async def close_pages(self) -> None:
        """Close every tab this driver opened."""
        for page in list(self._pages.values()):
            await page.close()

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """One DevTools command; its result, or BrowserError."""
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[message_id] = future
        await self._ws.send_str(json.dumps(message))
        reply = await future
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if "id" in data:
                    future = self._replies.pop(data["id"], None)
                    if future is not None and not future.done():
                        future.set_result(data)
                elif "sessionId" in data:
                    page = self._pages.get(data["sessionId"])
                    if page is not None:
                        page._on_event(data["method"], data.get("params", {}))
        finally:
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(BrowserError("the DevTools connection closed"))

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), 5)
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One attached tab."""

    def __init__(self, browser: Browser, session_id: str, target_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.target_id = target_id
        #: console messages and uncaught exceptions, as text (for failure messages)
        self.console: list[str] = []
        self._loaded = asyncio.Event()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session_id)

    async def close(self) -> None:
        """Close the tab (its peer connections go with it)."""
        self.browser._pages.pop(self.session_id, None)
        with contextlib.suppress(BrowserError):
            await self.browser.send("Target.closeTarget", {"targetId": self.target_id})

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            args = " ".join(
                str(a.get("value", a.get("description", a.get("type")))) for a in params["args"]
            )
            self.console.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"uncaught: {text}")
        elif method == "Page.loadEventFired":
            self._loaded.set()

    async def goto(self, url: str, timeout: float = 15.0) -> None:
        """Open ``url`` and wait for its load event."""
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str, *, timeout: float = 20.0) -> Any:
        """The value of a JavaScript expression (promises are awaited), as JSON."""
        result = await asyncio.wait_for(
            self.send(
                "Runtime.evaluate",
                {"expression": expression, "awaitPromise": True, "returnByValue": True},
            ),
            timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} raised: {text}\n{self.log_text()}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate ``expression`` until it is truthy; its value (BrowserError on timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}\n{self.log_text()}")
            await asyncio.sleep(0.05)

    async def set_viewport(self, width: int, height: int) -> None:
        """Make the page's viewport exactly ``width`` x ``height`` CSS pixels."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def screenshot(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """A PNG of the page (written to ``path`` if given)."""
        result = await self.send("Page.captureScreenshot", {"format": "png"})
        png = base64.b64decode(result["data"])
        if path is not None:
            pathlib.Path(path).write_bytes(png)
        return png

    def log_text(self) -> str:
        return "\n".join(self.console[-40:])


async def _devtools_address(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    seen = []
    while True:
        line = await process.stderr.readline()
        if not line:
            raise BrowserError(
                "Chromium exited before DevTools was ready:\n"
                + b"".join(seen).decode(errors="replace")[-2000:]
            )
        seen.append(line)
        match = _DEVTOOLS_LINE.search(line)
        if match:
            # keep draining stderr, or Chromium blocks once the pipe fills
            asyncio.get_running_loop().create_task(_drain(process.stderr))
            return match.group(1).decode()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
