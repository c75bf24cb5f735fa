"""The admin layer's parts without a server: token parsing, background jobs,
the stanzas-per-second figure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.admin.auth import TokenError, TokenStore, load_tokens, parse_tokens
from services.admin.commands import AdminContext
from services.admin.jobs import Job, JobManager, JobsBusy, for_each
from services.platform.config import Settings

from ..conftest import wait_until

# ---------------------------------------------------------------- token parsing


def test_parse_tokens() -> None:
    assert parse_tokens(["t1:read,write", "t2:admin"]) == {
        "t1": frozenset({"read", "write"}),
        "t2": frozenset({"admin"}),
    }
    # XMPPD_ADMIN_TOKENS=t1:read,write,t2:admin arrives split at the commas
    assert parse_tokens(["t1:read", "write", "t2:admin"]) == {
        "t1": frozenset({"read", "write"}),
        "t2": frozenset({"admin"}),
    }
    assert parse_tokens(["t1:read+write", " ", "t1:admin"]) == {
        "t1": frozenset({"read", "write", "admin"})
    }


@pytest.mark.parametrize(
    "entries", [["t1:root"], [":read"], ["read"], ["t1:"], ["t1:read", "sudo"]]
)
def test_parse_tokens_refuses_bad_entries(entries: list[str]) -> None:
    with pytest.raises(TokenError):
        parse_tokens(entries)


def test_token_error_does_not_echo_the_token() -> None:
    with pytest.raises(TokenError) as exc:
        parse_tokens(["supersecret-token:root"])
    assert "supersecret-token" not in str(exc.value)


def test_tokens_file(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# admin tokens\nfile-token:read,write  # the robot\n\n")
    s = Settings.load(env={}, admin_tokens=["env-token:admin"], admin_tokens_file=str(f))
    store = load_tokens(s)
    assert store.scopes("file-token") == {"read", "write"}
    assert store.scopes("env-token") == {"admin"}
    assert store.scopes("other") is None
    assert TokenStore.allows(frozenset({"admin"}), "write")
    assert not TokenStore.allows(frozenset({"write"}), "read")


def test_tokens_from_environment() -> None:
    s = Settings.load(env={"XMPPD_ADMIN_TOKENS": "a1:read,write,b2:admin", "XMPPD_ADMIN_PORT": "0"})
    store = load_tokens(s)
    assert s.admin_port == 0
    assert store.scopes("a1") == {"read", "write"} and store.scopes("b2") == {"admin"}


# ---------------------------------------------------------------- jobs


async def test_for_each_is_bounded_and_counts() -> None:
    job = Job(id="j", kind="test", total=50)
    running = peak = 0

    async def step(i: int) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        if i % 10 == 0:
            raise RuntimeError("boom")  # counted as failed, the job goes on
        return i % 7 != 0

    await for_each(job, range(50), step, concurrency=4)
    assert peak == 4
    failed = {i for i in range(50) if i % 10 == 0 or i % 7 == 0}
    assert job.failed == len(failed) and job.done == 50 - len(failed)


async def test_job_manager_limits_keeps_and_cancels() -> None:
    jobs = JobManager(keep=3, max_running=2)
    gate = asyncio.Event()

    async def wait(job: Job) -> None:
        await gate.wait()

    a = jobs.submit("x", wait)
    b = jobs.submit("x", wait)
    with pytest.raises(JobsBusy):
        jobs.submit("x", wait)
    assert jobs.cancel(a.id) is a
    await wait_until(lambda: a.status != "running", what="job a ended")
    assert a.status == "cancelled" and a.finished is not None
    gate.set()
    await wait_until(lambda: b.status != "running", what="job b ended")
    assert b.status == "done"

    async def fail(job: Job) -> None:
        raise ValueError("bad")

    c = jobs.submit("x", fail)
    await wait_until(lambda: c.status != "running", what="job c ended")
    assert c.status == "failed" and c.error == "ValueError: bad"
    for _ in range(3):
        d = jobs.submit("x", wait)  # the gate is open: done at once
        await wait_until(lambda d=d: d.status != "running", what="job d ended")
    listed = jobs.list()
    assert len(listed) == 3 and listed[0].created >= listed[-1].created  # newest first
    assert jobs.get(a.id) is None  # the oldest finished ones are forgotten
    assert jobs.cancel("nope") is None
    await jobs.close()


# ---------------------------------------------------------------- stanzas per second


def test_stanza_rate_over_a_window() -> None:
    now = [1000.0]
    count = [0]
    ctx = AdminContext(
        storage=None, hosts=["localhost"], stanza_count=lambda: count[0], clock=lambda: now[0]
    )  # type: ignore[arg-type]
    assert ctx.stanza_rate() == (0, 0.0, 0.0)
    now[0] += 10
    count[0] += 100
    assert ctx.stanza_rate() == (100, 10.0, 10.0)
    # samples older than the window are dropped, keeping one as the baseline
    for _ in range(10):
        now[0] += 30
        count[0] += 300  # 10/s from here on
        total, rate, window = ctx.stanza_rate()  # type: ignore[misc]
    assert total == 3100 and rate == pytest.approx(10.0) and 60 <= window <= 90
    assert AdminContext(storage=None, hosts=[]).stanza_rate() is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- xmppctl on the same commands


def test_xmppctl_without_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.app.cli import main

    monkeypatch.setenv("XMPPD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XMPPD_HOSTS", "localhost")
    monkeypatch.delenv("XMPPD_CONFIG", raising=False)
    assert main(["adduser", "alice@localhost", "--password", "pw"]) == 0
    assert main(["adduser", "bob", "--password", "pw"]) == 0
    assert main(["users", "--search", "ALI"]) == 0
    assert main(["kick", "alice"]) == 0
    assert main(["deluser", "bob@localhost"]) == 0
    assert main(["deluser", "bob@localhost"]) == 1
    out = capsys.readouterr()
    assert out.out.splitlines() == [
        "ok: alice@localhost",
        "ok: bob@localhost",
        "alice@localhost",
        "kicked 0 session(s)",
        "ok: bob@localhost",
    ]
    assert "bob@localhost does not exist" in out.err
