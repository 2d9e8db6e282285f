"""Open a local HTML file in headless Chromium (Debian's `chromium`) and report what its console said.

Talks the DevTools protocol over a websocket (aiohttp): page exceptions, console errors and failed loads are
collected until the load event, then the page is asked a question through `Runtime.evaluate`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from stream.embedded import stop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--remote-debugging-port=0"]


@dataclass
class PageVisit:
    errors: list[str] = field(default_factory=list)
    answer: Any = None


def visit(path: Path, expression: str, timeout: float = 60.0, screenshot: Path | None = None) -> PageVisit:
    """Load `path` in a fresh headless Chromium; collect errors; evaluate `expression` after the load event; with
    `screenshot`, write the page's first screen there as PNG (what a person opening it sees)."""
    assert CHROMIUM, "chromium is not installed"
    # Chromium's helper processes may still write to the profile as the main one exits: the whole process group
    # is stopped below, and a file that appears during cleanup does not fail the test.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _devtools_port(Path(profile), proc, timeout)
            return asyncio.run(_visit(port, path.resolve().as_uri(), expression, timeout, screenshot))
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    stop(proc, 15)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # helpers that outlived the main process
    except ProcessLookupError:
        pass


def _devtools_port(profile: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"chromium exited with {proc.returncode}")
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        time.sleep(0.1)
    raise AssertionError("chromium did not open its DevTools port")


async def _visit(port: int, url: str, expression: str, timeout: float, screenshot: Path | None) -> PageVisit:
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank",
                                                       method="PUT"), timeout=10) as resp:
        ws_url = json.loads(resp.read())["webSocketDebuggerUrl"]
    result = PageVisit()
    ids = itertools.count(1)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        async def call(method: str, **params: Any) -> dict[str, Any]:
            my_id = next(ids)
            await ws.send_json({"id": my_id, "method": method, "params": params})
            while True:
                msg = await asyncio.wait_for(ws.receive_json(), timeout)
                if msg.get("id") == my_id:
                    return msg
                _collect(msg, result)

        for domain in ("Runtime", "Log", "Page", "Network"):
            await call(f"{domain}.enable")
        await call("Page.navigate", url=url)
        while True:
            msg = await asyncio.wait_for(ws.receive_json(), timeout)
            if msg.get("method") == "Page.loadEventFired":
                break
            _collect(msg, result)
        reply = await call("Runtime.evaluate", expression=expression, returnByValue=True)
        result.answer = reply["result"]["result"].get("value")
        if screenshot is not None:
            shot = await call("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
    return result


def _collect(msg: dict[str, Any], result: PageVisit) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.exceptionThrown":
        result.errors.append(f"exception: {params['exceptionDetails'].get('text')}")
    elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        result.errors.append(f"console.{params['type']}: {params.get('args')}")
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        result.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
    elif method == "Network.loadingFailed":
        result.errors.append(f"load failed: {params.get('errorText')}")
    elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(("file:", "data:")):
        result.errors.append(f"network request: {params['request']['url']}")
