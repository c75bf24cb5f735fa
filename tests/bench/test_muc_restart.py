"""bench/muc_restart.py against the real ``xmppd`` process, tiny sizes.

3 occupants of a persistent members-only room post 5 messages; the script
kills the server with SIGKILL, starts it again on the same data folder and
records what the users see. Marked slow: it starts the server three times
(provisioning, a clean restart, the restart after the kill).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import muc_restart

OCCUPANTS, MESSAGES = 3, 5


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_embedded_room_across_kill_9(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = muc_restart.main(
        [
            "--targets", "embedded", "--occupants", str(OCCUPANTS),
            "--messages", str(MESSAGES), "--recovery-timeout", "60", "--out", str(tmp_path),
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    (path,) = tmp_path.glob("muc-restart-*.json")
    run = json.loads(path.read_text())
    (t,) = run["targets"]
    assert rc == 0, t.get("error")
    assert t["available"] and "error" not in t, t.get("error")
    assert run["occupants"] == OCCUPANTS and run["messages"] == MESSAGES

    # before the kill: every message echoed to its sender and delivered to all
    ex = t["exchange"]
    assert ex["echoed"] == MESSAGES and ex["not_echoed"] == 0
    assert ex["copies_delivered"] == ex["copies_expected"] == MESSAGES * OCCUPANTS
    assert t["setup"]["config"]["fields_absent"] == []  # persistent, members-only, history

    # the kill: the server process itself, gone, and a new one after the restart
    kill, restart = t["kill"], t["restart"]
    assert kill["comm"].startswith(muc_restart.SERVER_COMM["embedded"])
    assert restart["killed_pid_gone"] is True and "error" not in restart
    assert restart["new_pid"] != kill["pid"]

    after = t["after"]
    # a single process: every connection drops, and SIGKILL leaves no goodbye
    assert after["connections"]["dropped"] == OCCUPANTS
    assert after["stanzas_before_drop"]["count"] == 0
    # then, in order: the port answers, a login works, the rejoin, its echo
    rejoin = after["rejoin"]
    assert 0 < after["listening_s"] <= after["observer"]["login_s"]
    assert rejoin["login_s"] <= rejoin["join_s"] <= rejoin["echo_s"] < 60
    # the room came back from storage (no 201: not created anew), with its
    # configuration (a non-member is refused) and its whole history
    assert rejoin["room_recreated"] is False
    assert after["stranger"]["error"] == "registration-required"
    info = after["observer"]["disco_info"]
    assert info["persistent"] is True and info["members_only"] is True
    assert rejoin["history_of_ours"] == MESSAGES
    # the occupants' connections are gone, so are they: nobody is left in the room
    assert after["observer"]["join"]["ok"] and after["observer"]["join"]["stayed"] == []
    assert info["occupants"] == 0
    assert rejoin["bookmark_autojoin"] is True

    # the script stopped every server it started
    assert t["stopped"] is True
    assert kill["pid"] in t["server_pids"] and restart["new_pid"] in t["server_pids"]
    assert not [p for p in t["server_pids"] if _alive(p)]

    # the table printed has the figures of the JSON
    assert f"| history a rejoining client receives (of ours) | {MESSAGES}/{MESSAGES} |" in printed
    assert "| server stopped by the script | yes |" in printed
    assert "registration-required" in printed
