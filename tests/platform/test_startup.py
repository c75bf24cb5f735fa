"""Starting ``xmppd`` as a new user would: the defaults in a fresh folder, as a
normal user, and a one-line error naming the setting when start-up fails."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _as_normal_user() -> list[str]:
    """A command prefix that drops root (CI runs as root, which hides
    permission bugs); nothing when this already is a normal user."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv to drop privileges")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


@pytest.fixture
def fresh_folder() -> Iterator[Path]:
    # not pytest's tmp_path: its parents are private to the user running pytest
    d = Path(tempfile.mkdtemp(prefix="xmppd-newuser-"))
    if os.geteuid() == 0:
        os.chown(d, 65534, 65534)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMPPD_")}
    # everything at its default except the ports, which must not collide
    env.update(
        HOME="/tmp",
        XMPPD_C2S_HOST="127.0.0.1",
        XMPPD_C2S_PORT="0",
        XMPPD_C2S_DIRECT_TLS_PORT="0",
        XMPPD_OPS_PORT="-1",
    )
    return env


def test_defaults_put_the_database_in_the_working_folder_as_a_normal_user(
    fresh_folder: Path,
) -> None:
    proc = subprocess.Popen(
        [*_as_normal_user(), str(BIN / "xmppd")],
        cwd=fresh_folder,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            if "listening on" in line:
                break
        assert any("listening on" in x for x in log), "".join(log)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, "".join(log)
    assert (fresh_folder / "data" / "xmppd.db").is_file()
    assert (fresh_folder / "data" / "cert.pem").is_file()
    assert not any("Traceback" in x for x in log), "".join(log)


def test_a_data_dir_that_cannot_be_made_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = _env() | {"XMPPD_DATA_DIR": str(blocker / "data")}
    out = subprocess.run([str(BIN / "xmppd")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("xmppd: cannot start: data_dir = "), out.stderr


def test_a_database_that_cannot_be_opened_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    env = _env() | {
        "XMPPD_DATA_DIR": str(tmp_path / "data"),
        # a folder where the database file should be: SQLite cannot open it
        "XMPPD_DATABASE_URL": f"sqlite://{tmp_path}",
    }
    out = subprocess.run([str(BIN / "xmppd")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    lines = [x for x in out.stderr.strip().splitlines() if "cannot start" in x]
    assert lines and lines[0].startswith("xmppd: cannot start: database_url = "), out.stderr
    assert "Traceback" not in out.stderr


def test_xmppctl_names_the_setting_too(tmp_path: Path) -> None:
    env = _env() | {"XMPPD_DATABASE_URL": f"sqlite://{tmp_path}"}
    out = subprocess.run(
        [str(BIN / "xmppctl"), "users"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.startswith("xmppctl: database_url = "), out.stderr
    assert "Traceback" not in out.stderr
