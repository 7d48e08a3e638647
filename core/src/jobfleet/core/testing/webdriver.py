"""A real headless Chromium driven over the W3C WebDriver protocol, with the stdlib alone.

For `jobfleet ui`'s browser tests: `chromedriver` (Debian's `chromium-driver`) is started on a
free loopback port and spoken to in JSON over HTTP (urllib): open a page, count elements, read
their text, run a line of script, take a screenshot. No selenium, no network beyond loopback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

BROWSERS: Final = ("chromium", "chromium-browser", "google-chrome")
DRIVERS: Final = ("chromedriver", "chromium-driver")


def find_browser() -> tuple[str | None, str | None]:
    """The Chromium binary and its WebDriver, as found on PATH (None where missing)."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    extra = os.pathsep.join([os.environ.get("PATH", ""), "/usr/lib/chromium", "/usr/bin"])
    driver = next((found for name in DRIVERS if (found := shutil.which(name, path=extra))), None)
    return browser, driver


class WebDriverError(RuntimeError):
    """The driver answered with an error (its message), or did not start."""


class Browser:
    """One headless Chromium session; close it with `close()` (or use it as a context)."""

    def __init__(self, browser: str, driver: str, *, width: int = 1280, height: int = 900,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self._profile = tempfile.mkdtemp(prefix="jobfleet-chromium-")
        self.port = _free_port()
        self._log = open(Path(self._profile) / "chromedriver.log", "wb")  # noqa: SIM115
        self._driver = subprocess.Popen(
            [driver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._base = f"http://127.0.0.1:{self.port}"
        self.session = ""
        try:
            self._wait_ready(timeout)
            arguments = [
                "--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                f"--user-data-dir={self._profile}/profile", f"--window-size={width},{height}",
                # Root in a container has no user namespaces for Chromium's sandbox.
                *(["--no-sandbox"] if os.geteuid() == 0 else []),
            ]  # fmt: skip
            answer = self._call("POST", "/session", {
                "capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": browser, "args": arguments},
                }}
            })  # fmt: skip
            self.session = answer["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._driver.poll() is not None:
                raise WebDriverError(f"chromedriver exited with {self._driver.returncode}")
            try:
                if self._call("GET", "/status").get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > deadline:
                raise WebDriverError("chromedriver did not become ready")
            time.sleep(0.05)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        # http://127.0.0.1 only: the driver's address, made here.
        request = urllib.request.Request(  # noqa: S310
            self._base + path, data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
                payload = json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            value = payload.get("value", {})
            raise WebDriverError(f"{value.get('error')}: {value.get('message')}") from None
        value = payload.get("value", payload)
        if path == "/session" and method == "POST" and "sessionId" not in value:
            value = {**value, "sessionId": payload.get("sessionId")}
        return value

    def _session(self, method: str, path: str, body: Any = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run `source` (a function body; `arguments` holds `args`) and return its value."""
        return self._session("POST", "/execute/sync", {"script": source, "args": list(args)})

    def count(self, selector: str) -> int:
        return int(self.script("return document.querySelectorAll(arguments[0]).length;", selector))

    def texts(self, selector: str) -> list[str]:
        """The rendered text of every element `selector` matches, read in one script: a page
        that replaces its parts while it is read (live updates) leaves no stale element."""
        found = self.script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim());",
            selector,
        )
        return [str(text) for text in found]

    def text(self, selector: str) -> str:
        texts = self.texts(selector)
        if not texts:
            raise WebDriverError(f"no element matches {selector!r}")
        return texts[0]

    @property
    def current_url(self) -> str:
        return str(self._session("GET", "/url"))

    def resize(self, width: int, height: int) -> None:
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self) -> None:
        if self.session:
            with contextlib.suppress(OSError, WebDriverError):
                self._session("DELETE", "")
            self.session = ""
        if self._driver.poll() is None:
            self._driver.terminate()
            try:
                self._driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._driver.kill()
                self._driver.wait()
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
