"""Run Converse.js (a real browser client) in headless Chromium: tests/web/js/converse_chat.mjs.

The Node script logs in over WebSocket (RFC 7395) or BOSH (XEP-0206), opens a
chat with a peer, sends a message, waits for the peer's reply to show and
takes a screenshot. ``scripts/install-tools.sh`` (``make tools``) installs what
it needs: Debian ``chromium`` and ``npm ci`` in tests/web/js. A missing piece
fails the test (never a skip): the suite must not pass without the browser.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

WEB_DIR = Path(__file__).resolve().parent
JS_DIR = WEB_DIR / "js"
SCRIPT = JS_DIR / "converse_chat.mjs"
SCREENSHOTS = WEB_DIR / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
INSTALL_HINT = "run `make tools` (scripts/install-tools.sh)"


def missing_prerequisites() -> list[str]:
    """What the browser tests need and is not installed."""
    missing = []
    if shutil.which("node") is None:
        missing.append("node (Debian: nodejs)")
    for pkg, probe in (
        ("converse.js", "converse.js/dist/converse.min.js"),
        ("playwright-core", "playwright-core/package.json"),
    ):
        if not (JS_DIR / "node_modules" / probe).is_file():
            missing.append(f"npm {pkg} (npm ci in {JS_DIR})")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian: chromium)")
    return missing


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run_converse(**args: Any) -> dict[str, Any]:
    """Run converse_chat.mjs with these arguments; return its JSON result.

    Arguments (see the script): transport ("websocket" or "bosh"), url, jid,
    password, peer, message, expect_reply, screenshot, timeout_s (default 60).
    Blocking: from a test's event loop, call it with ``asyncio.to_thread`` so
    the embedded server and the peer keep running. Fails the test when the
    prerequisites are missing, the script fails, or it does not finish in time.
    """
    missing = missing_prerequisites()
    if missing:
        pytest.fail(f"the browser test needs {', '.join(missing)}: {INSTALL_HINT}")
    args.setdefault("timeout_s", 60)
    timeout = float(args["timeout_s"]) + 30  # the script stops itself at timeout_s
    env = {**os.environ, "CONVERSE_CHAT_ARGS": json.dumps(args)}
    proc = subprocess.Popen(
        ["node", str(SCRIPT)],
        cwd=JS_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the script then closes Chromium (a SIGKILL would orphan it)
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(
            f"converse_chat.mjs did not finish within {timeout:.0f} s\n"
            f"stdout: {out[-2000:]}\nstderr tail:\n{_tail(err)}"
        )
    result: dict[str, Any] | None = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    if result is None:
        pytest.fail(
            f"converse_chat.mjs exited {proc.returncode} without a result\n"
            f"stdout: {out[-2000:]}\nstderr tail:\n{_tail(err)}"
        )
    if not result.get("ok") or proc.returncode != 0:
        log = "\n".join(result.get("log") or [])
        pytest.fail(
            f"Converse.js over {args.get('transport')} failed: {result.get('error')} "
            f"(exit {proc.returncode}, stage {result.get('stage')})\n"
            f"Converse log tail:\n{log}\nstderr tail:\n{_tail(err, 30)}"
        )
    return result
