"""Headless Chromium (Debian package ``chromium``) driven over the DevTools protocol, as a test helper: load a page,
wait, collect console errors and uncaught exceptions, measure an element's box and take a screenshot.

Tests skip with a reason when no ``chromium`` binary is installed (``make test-tools`` installs it with apt-get).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

# FACTS.md flags for a container without GPU or dbus; SwiftShader gives WebGL on the CPU (needed for the 3D views).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-angle=swiftshader",
         "--enable-unsafe-swiftshader", "--hide-scrollbars", "--mute-audio", "--no-first-run"]  # fmt: skip


def chromium_binary() -> str:
    """The Chromium executable, or skip the test."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; `make test-tools`)")


@dataclass
class PageVisit:
    """What a page did in the browser.

    Attributes:
        screenshot: ``(H, W, 3) uint8`` RGB of the viewport.
        errors: console messages of level error and uncaught exceptions (text).
        boxes: CSS selector -> (x, y, width, height) in viewport pixels (None if the element was absent).
        values: JavaScript expression -> its JSON value after the wait.
    """

    screenshot: np.ndarray
    errors: list[str] = field(default_factory=list)
    boxes: dict[str, tuple[float, float, float, float] | None] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)


class _Devtools:
    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(url, max_size=2**28, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60.0, **params) -> dict:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        end = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=left)))
            except TimeoutError:
                return


def visit(url: str, wait_s: float = 8.0, size: tuple[int, int] = (1300, 1000), selectors: tuple[str, ...] = (),
          expressions: tuple[str, ...] = (), ready: str | None = None,
          settled: Callable[[np.ndarray], bool] | None = None) -> PageVisit:  # fmt: skip
    """Open ``url`` in a fresh headless Chromium, wait ``wait_s`` seconds (or until the JS expression ``ready`` is
    true, at most 4x as long; then, if given, until ``settled(screenshot)`` holds, at most 4x as long), then read
    boxes/values, errors and a screenshot."""
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="avatarize-chromium-") as profile:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 f"--window-size={size[0]},{size[1]}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(300):
                if port_file.is_file() and len(port_file.read_text().split()) >= 2:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError("Chromium did not open its DevTools port")
            port = port_file.read_text().split()[0]
            import urllib.request

            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t.get("type") == "page")
            dt = _Devtools(page["webSocketDebuggerUrl"])
            for domain in ("Page", "Runtime", "Log"):
                dt.call(f"{domain}.enable")
            dt.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                    mobile=False)  # fmt: skip
            dt.call("Page.navigate", url=url)
            dt.pump(wait_s)
            if ready is not None:
                for _ in range(int(3 * wait_s)):
                    if dt.call("Runtime.evaluate", expression=ready, returnByValue=True)["result"].get("value"):
                        break
                    dt.pump(1.0)
            if settled is not None:
                for _ in range(int(2 * wait_s)):
                    if settled(_screenshot(dt)):
                        break
                    dt.pump(2.0)
            result = PageVisit(screenshot=np.zeros((1, 1, 3), np.uint8))
            for sel in selectors:
                expr = (f"(() => {{ const e = document.querySelector({json.dumps(sel)}); if (!e) return null; "
                        "const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })()")  # fmt: skip
                box = dt.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")
                result.boxes[sel] = tuple(box) if box else None
            for expr in expressions:
                result.values[expr] = dt.call("Runtime.evaluate", expression=expr, returnByValue=True,
                                              awaitPromise=True)["result"].get("value")  # fmt: skip
            result.screenshot = _screenshot(dt)
            for ev in dt.events:
                method, params = ev.get("method"), ev.get("params", {})
                if method == "Runtime.exceptionThrown":
                    d = params["exceptionDetails"]
                    result.errors.append(f"Uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
                elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                    result.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description")))
                                                                       for a in params.get("args", [])))  # fmt: skip
                elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                    result.errors.append(f"log: {params['entry'].get('text')} ({params['entry'].get('url')})")
            dt.ws.close()
            return result
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _screenshot(dt: _Devtools) -> np.ndarray:
    import cv2

    shot = dt.call("Page.captureScreenshot", format="png")["data"]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(shot), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def region_std(image: np.ndarray, box: tuple[float, float, float, float], inset: int = 4) -> float:
    """Standard deviation of the grey values inside ``box`` (x, y, w, h) of a screenshot: ~0 for a blank canvas."""
    x, y, w, h = (int(round(v)) for v in box)
    crop = image[max(0, y + inset) : y + h - inset, max(0, x + inset) : x + w - inset]
    return float(crop.astype(np.float32).mean(-1).std()) if crop.size else 0.0
