"""Headless Chromium (Debian's ``chromium``) for the UI tests, driven through the DevTools
protocol: open a page, wait until a condition holds in it, click as a user would, and keep
the rendered DOM and a screenshot."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import matplotlib.image
import numpy as np
from websockets.sync.client import connect

from apoe_assets_tests.mlflow_server import free_port
from apoe_assets_tests.processes import stop_group
from apoe_assets_tests.requirements import require_tools

CHROMIUM = "chromium"
WAIT_SECONDS = 90
SCREENSHOTS = Path(__file__).resolve().parents[1] / ".apoe" / "screenshots"
"""Where the UI tests keep their screenshots (the README shows copies in docs/screenshots)."""


@dataclass(frozen=True)
class RenderedPage:
    """A page after its scripts ran: the serialised DOM and the screenshot's path."""

    url: str
    dom: str
    screenshot: Path

    def ink(self) -> float:
        """Share of the screenshot's pixels that differ from its most common colour (the
        background): 0 for a blank page."""
        pixels = matplotlib.image.imread(self.screenshot)[..., :3]
        flat = (pixels.reshape(-1, 3) * 255).round().astype(np.uint8)
        colours, counts = np.unique(flat, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        return float(np.mean(np.any(flat != background, axis=1)))


class Page:
    """One browser tab, spoken to over its DevTools WebSocket."""

    def __init__(self, websocket_url: str) -> None:
        self._socket = connect(websocket_url, max_size=None, open_timeout=30)
        self._ids = count(1)

    def command(self, method: str, **params: object) -> dict:
        """Send one DevTools command and return its result (events in between are skipped)."""
        number = next(self._ids)
        self._socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=WAIT_SECONDS))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.command("Runtime.evaluate", expression=expression, returnByValue=True,
                              awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, condition: str, what: str) -> None:
        """Poll the JavaScript ``condition`` until it is truthy (an error while the page
        loads counts as not yet)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.evaluate(f"(() => {{ try {{ return Boolean({condition}); }} "
                                f"catch (e) {{ return false; }} }})()"):
            if time.monotonic() > deadline:
                text = self.evaluate("document.body ? document.body.innerText : ''")
                raise TimeoutError(f"{what} never appeared; the page shows:\n{str(text)[:2000]}")
            time.sleep(0.5)

    def render(self, url: str, screenshot: Path, ready: str, size: tuple[int, int] = (1600, 1000),
               then: str | None = None, then_ready: str | None = None) -> RenderedPage:
        """Open ``url`` at ``size``, wait until the JavaScript condition ``ready`` holds, run
        ``then`` (a click, say) and wait for ``then_ready``; keep the DOM and a PNG."""
        width, height = size
        self.command("Emulation.setDeviceMetricsOverride", width=width, height=height,
                     deviceScaleFactor=1, mobile=False)
        self.command("Page.navigate", url=url)
        self.wait_for(ready, ready)
        if then:
            self.evaluate(then)
            self.wait_for(then_ready or "true", then_ready or then)
        time.sleep(1)  # let fonts and transitions settle
        image = self.command("Page.captureScreenshot", format="png")["data"]
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(image))
        dom = str(self.evaluate("document.documentElement.outerHTML"))
        return RenderedPage(url, dom, screenshot)

    def close(self) -> None:
        self._socket.close()


@contextmanager
def chromium() -> Iterator[Page]:
    """A fresh headless Chromium (own profile, no sandbox, no GPU) with one blank tab."""
    require_tools(CHROMIUM)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="apoe-chromium-") as profile:
        process = subprocess.Popen(
            [shutil.which(CHROMIUM) or CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                timeout=5) as response:
                        tabs = [t for t in json.loads(response.read()) if t["type"] == "page"]
                    if tabs:
                        break
                except OSError:
                    pass
                assert process.poll() is None, "chromium exited at start"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.5)
            page = Page(tabs[0]["webSocketDebuggerUrl"])
            try:
                yield page
            finally:
                page.close()
        finally:
            # its renderer and helper processes too: one left writing to the profile made the
            # folder's removal fail ("Directory not empty")
            stop_group(process, 15)
