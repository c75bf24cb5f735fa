"""``make bench``: our server side by side with Prosody and ejabberd (issue #5).

One run starts each target in turn on loopback ports with its own generated
configuration and data folder, creates the same users and rosters on each,
runs the same scenarios with the same sizes (bench/loadgen.py), stops it,
then writes:

* ``bench/results/<stamp>.json`` - the summary of the run (small);
* ``bench/results/raw/<stamp>/`` - server logs and raw profiles (git-ignored);
* ``docs/bench/results.md`` - the table with ratios to each peer, also pasted
  into docs/benchmarks.md between its ``bench:results`` markers;
* ``docs/bench/*.png`` - charts (matplotlib);
* ``docs/bench/profile-{embedded,cluster}.svg`` and ``.md`` - py-spy
  profiles of our embedded server and of the cluster's first edge under the
  closed-loop message scenario (a separate, unmeasured phase so the profiler
  does not skew the figures).

Targets: ``embedded`` (``xmppd``), ``prosody`` and ``ejabberd`` (Debian
packages, installed with apt-get when missing and run as root), ``cluster``
(``services.app.local.LocalCluster``: storage, presence, 2 routers and 2
edges as processes against the local PostgreSQL and Redis, with a database
and a Redis key prefix of its own, removed afterwards). The cluster's server
CPU is summed over its processes, the Redis server and the PostgreSQL
backends of its database; the ``edges`` scenario (cluster only) compares
logins and held connections on one edge with the same on two. The ``muc``
scenario (group chat, XEP-0045) uses each server's MUC service at
``conference.localhost``: xmppd's is always on; Prosody gets a ``muc``
component and ejabberd ``mod_muc`` when the run has that scenario. The
``pep`` scenario (personal eventing, XEP-0163) uses every account's PEP
service: xmppd's is always on; Prosody gets ``mod_pep`` and ejabberd
``mod_pubsub`` with the ``pep`` plugin (and ``mod_caps``) when the run has
that scenario. Its publishers ``q<k>`` each have contacts ``q<k>c<j>`` in
mutual subscriptions, created only when the run has it.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402

DOMAIN = "localhost"
PASSWORD = "bench-Pa55word"
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "bench"
BENCH_DOC = ROOT / "docs" / "benchmarks.md"
BIN = Path(sys.executable).parent
MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"
SCENARIOS = ("login", "messages", "idle", "presence", "muc", "pep", "edges")
#: the group chat service (XEP-0045) on every target
MUC_SERVICE = f"conference.{DOMAIN}"
#: the occupant limit set on the peers that have one (ejabberd: 200 by
#: default); xmppd's default (muc_max_occupants) is 200 and is raised only for
#: larger rooms; Prosody 0.12 has no such limit
MUC_MAX_OCCUPANTS = 1000
#: the per-IP limits and the shaper off: the load comes from one address and
#: measures the server, not its defences (docs/operations.md, "Limits")
BENCH_LIMITS = {
    "XMPPD_MAX_UNAUTHENTICATED_PER_IP": "0",
    "XMPPD_CONNECTION_RATE_PER_IP": "0",
    "XMPPD_SHAPER_RATE": "0",
    # the peers run without their archive modules (mod_mam): xmppd's
    # archive (XEP-0313, on by default) is off too, so a message costs the
    # same work on all three
    "XMPPD_MAM_DEFAULT": "never",
}
TARGETS = ("embedded", "prosody", "ejabberd", "cluster")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------- sizes


@dataclass
class Sizes:
    logins: int = 1000
    msg_clients: int = 500
    closed_s: float = 20.0
    rate: float = 1000.0
    rate_s: float = 15.0
    window: int = 4
    warmup_s: float = 2.0
    idle: int = 2000
    presence_users: int = 200
    contacts: int = 50
    workers: int = 2
    concurrency: int = 50
    login_mech: str = "SCRAM-SHA-1"
    setup_mech: str = "auto"
    profile_s: float = 10.0
    scale_conns: int = 1000
    scale_hold_s: float = 3.0
    muc_rooms: str = "10x10,2x100"
    muc_senders: int = 2
    muc_window: int = 2
    muc_s: float = 15.0
    pep_sizes: str = "1x100,5x100"
    pep_contacts: int = 0  # when set: the contacts of every PEP phase
    pep_window: int = 2
    pep_s: float = 15.0

    def muc_specs(self) -> list[tuple[int, int]]:
        return loadgen.room_specs(self.muc_rooms)

    def pep_specs(self) -> list[tuple[int, int]]:
        return loadgen.pep_specs(self.pep_sizes, self.pep_contacts)

    def pep_clients(self) -> int:
        """Connections of the largest PEP phase (publishers and contacts)."""
        return max(p * (c + 1) for p, c in self.pep_specs())

    def muc_clients(self) -> int:
        """Connections of the largest group chat phase (phases run one after another)."""
        return max(r * n for r, n in self.muc_specs())

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            logins=100,
            msg_clients=50,
            closed_s=4.0,
            rate=300.0,
            rate_s=3.0,
            warmup_s=1.0,
            idle=200,
            presence_users=60,
            contacts=20,
            profile_s=3.0,
            scale_conns=100,
            scale_hold_s=1.0,
            muc_rooms="4x5,2x20",
            muc_s=3.0,
            pep_sizes="1x20,3x20",
            pep_s=3.0,
        )


@dataclass
class Users:
    """The same accounts and rosters on every target."""

    plain: list[str]  # u0..: no roster (login, messages, idle)
    presence: list[str]  # p0..: mutual 'both' subscriptions on a ring
    contacts: list[list[int]]  # presence[i]'s contacts, as indices into presence
    #: PEP publishers q0.. and their contacts q<k>c0..: mutual 'both'
    #: subscriptions, a star around each publisher (only with the pep scenario)
    pep: list[tuple[str, list[str]]] = field(default_factory=list)

    @classmethod
    def make(cls, s: Sizes, pep: bool = False) -> Users:
        n = max(s.logins, s.msg_clients, s.idle, s.scale_conns, s.muc_clients())
        p = s.presence_users
        stars = []
        if pep:
            specs = s.pep_specs()
            size = max(c for _p, c in specs)
            for k in range(max(n for n, _c in specs)):
                stars.append((f"q{k}", [f"q{k}c{j}" for j in range(size)]))
        return cls(
            plain=[f"u{i}" for i in range(n)],
            presence=[f"p{i}" for i in range(p)],
            contacts=loadgen.ring_contacts(p, min(s.contacts, max(0, p - 1))),
            pep=stars,
        )

    def accounts(self) -> list[str]:
        """Every account but the first (``plain[0]``: created through the CLI)."""
        return self.plain[1:] + self.presence + [u for q, cs in self.pep for u in (q, *cs)]

    def roster_pairs(self) -> list[tuple[str, list[str]]]:
        ring = [
            (u, [self.presence[j] for j in cs])
            for u, cs in zip(self.presence, self.contacts, strict=True)
        ]
        stars = [(q, list(cs)) for q, cs in self.pep]
        stars += [(c, [q]) for q, cs in self.pep for c in cs]
        return ring + stars

    def pep_creds(self, password: str) -> list[loadgen.Star]:
        return [((q, password), [(c, password) for c in cs]) for q, cs in self.pep]


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    """A free loopback port below the ephemeral range (see TOOLING.md)."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f}s")


def run(cmd: Sequence[str], timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])}... exited {out.returncode}: {(out.stderr or out.stdout)[-800:]}"
        )
    return out


def ensure_debian_package(binary: str, package: str) -> str | None:
    """Return None when ``binary`` is available, else why it is not."""
    if shutil.which(binary):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{binary} missing (install the Debian package {package})"
    log(f"installing {package} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"]):
        subprocess.run(cmd, capture_output=True, env=env, timeout=900)
        if shutil.which(binary):
            return None
    subprocess.run(
        ["apt-get", "install", "-y", "-q", package], capture_output=True, env=env, timeout=900
    )
    return None if shutil.which(binary) else f"apt-get could not install {package}"


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """Stop a server we started (its own process group)."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def shared_salt_credentials(password: str) -> dict[str, Any]:
    """SCRAM credentials for ``password`` with one salt per run, per hash."""
    from services.xmpp.sasl import derive_credentials

    return {h: derive_credentials(password, h) for h in ("SHA-1", "SHA-256")}


# ------------------------------------------------------------------ targets


class TargetServer:
    name = ""
    label = ""
    #: the cheaper mechanism for logins no scenario measures (idle, messages)
    setup_mech = "PLAIN"
    #: the largest group chat room the run needs; 0: no group chat scenario,
    #: the peers then run without their MUC component
    muc = 0
    #: the run has the PEP scenario: the peers load their PEP modules
    pep = False

    def __init__(self, work: Path, cert: Path, key: Path, raw: Path) -> None:
        self.work = work / self.name
        self.cert = cert
        self.key = key
        self.raw = raw
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file: Any = None

    def unavailable(self) -> str | None:
        return None

    def version(self) -> str:
        return ""

    def start(self, users: Users) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ports(self) -> tuple[int, ...]:
        """Client ports; clients are spread over them by index (a cluster's edges)."""
        return (self.port,)

    def probe(self) -> loadgen.Probe:
        """What the server's CPU and memory are read from."""
        return loadgen.ProcTree(self.pid)

    def where(self) -> str:
        return f"127.0.0.1:{self.port} (pid {self.pid})"

    def stop(self) -> None:
        stop_process(self.proc)
        if self.log_file is not None:
            self.log_file.close()

    def _spawn(
        self, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log_file = open(self.raw / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            list(cmd),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class Embedded(TargetServer):
    name = "embedded"
    label = "xmppd embedded"

    def version(self) -> str:
        from importlib.metadata import version

        return f"xmppd {version('xmppd')} (Python {platform.python_version()})"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XMPPD_")}
        env.update(
            XMPPD_HOSTS=DOMAIN,
            XMPPD_DATA_DIR=str(self.work / "data"),
            XMPPD_C2S_HOST="127.0.0.1",
            XMPPD_C2S_PORT=str(self.port),
            XMPPD_C2S_DIRECT_TLS_PORT="-1",
            XMPPD_TLS_CERT=str(self.cert),
            XMPPD_TLS_KEY=str(self.key),
            XMPPD_LOG_LEVEL="WARNING",
            # the /metrics endpoint stays (as deployed) but on loopback, any free port
            XMPPD_OPS_HOST="127.0.0.1",
            # every simulated client connects from 127.0.0.1, as fast as it can
            **BENCH_LIMITS,
            XMPPD_OPS_PORT="0",
            # the web listener (WebSocket, BOSH) is on, as deployed, on a free port
            XMPPD_HTTP_HOST="127.0.0.1",
            XMPPD_HTTP_PORT="0",
            **muc_env(self.muc),
        )
        return env

    def start(self, users: Users) -> None:
        self.port = free_port()
        (self.work / "data").mkdir(parents=True, exist_ok=True)
        env = self.env()
        asyncio.run(self._provision(users, env["XMPPD_DATA_DIR"]))
        self._spawn([str(BIN / "xmppd")], env=env)
        wait_port(self.port, self.proc, 60, "xmppd")  # type: ignore[arg-type]

    async def _provision(self, users: Users, data_dir: str) -> None:
        from services.platform.db import open_database
        from services.platform.migrate import migrate

        db = await open_database(f"sqlite:///{data_dir}/xmppd.db")
        try:
            await migrate(db)
            await provision_xmppd(db, users)
        finally:
            await db.close()


def muc_env(largest_room: int) -> dict[str, str]:
    """xmppd's group chat service is always on (``conference.<host>``); its
    occupant limit is raised only for rooms above its default of 200."""
    if largest_room <= 200:
        return {}
    return {"XMPPD_MUC_MAX_OCCUPANTS": str(max(MUC_MAX_OCCUPANTS, largest_room))}


async def provision_xmppd(db: Any, users: Users, parallel: int = 1) -> None:
    """Accounts and rosters straight into xmppd's storage (embedded or cluster).

    The first account goes through the operator command layer (what xmppctl
    adduser runs), the rest in bulk through the same Store with credentials
    derived once (PBKDF2 per account would take a minute). ``parallel`` users
    at a time (PostgreSQL commits each transaction; SQLite stays sequential).
    """
    from services.admin.commands import AdminContext, add_user
    from services.core.storage import RosterItem
    from services.storage.store import Store

    store = Store(db)
    await add_user(AdminContext(store, [DOMAIN]), f"{users.plain[0]}@{DOMAIN}", PASSWORD)
    creds = list(shared_salt_credentials(PASSWORD).values())
    sem = asyncio.Semaphore(max(1, parallel))

    async def account(name: str) -> None:
        async with sem:
            await store.create_account(DOMAIN, name, creds)

    async def roster(user: str, contacts: list[str]) -> None:
        async with sem:  # one user's items in order: each bumps its roster version
            for c in contacts:
                await store.put_roster_item(
                    DOMAIN, user, RosterItem(jid=f"{c}@{DOMAIN}", subscription="both")
                )

    await asyncio.gather(*(account(n) for n in users.accounts()))
    await asyncio.gather(*(roster(u, cs) for u, cs in users.roster_pairs()))


PROSODY_CFG = """\
-- generated by bench/run.py
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
run_as_root = true
daemonize = false
log = {{ warn = "{dir}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
admin_socket = "{dir}/prosody.sock"
-- what xmppd implements too; no carbons, MAM, stream management or CSI (PEP
-- only with the pep scenario)
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "posix"; "admin_shell";
  "blocklist"; "offline"; "lastactivity"; "version"; "time"; "private"; "vcard_legacy";{extra}
}}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
default_iteration_count = 4096
c2s_require_encryption = true
allow_registration = false
storage = "internal"
ssl = {{ certificate = "{cert}"; key = "{key}" }}
VirtualHost "{domain}"
"""

#: appended when the run has the group chat scenario: XEP-0045 on
#: conference.<domain>. Anyone may create a room (the default, made explicit);
#: new rooms stay locked until configured (muc_room_locking, the default);
#: rooms keep 20 messages of history (the default, as on xmppd and
#: ejabberd). Prosody 0.12's mod_muc has no occupant limit and no rate limit
#: (mod_muc_limits is a community module, not loaded); at most 100 rooms are
#: kept live by default, raised with the rest.
PROSODY_MUC = """Component "{service}" "muc"
restrict_room_creation = false
max_history_messages = 20
muc_room_cache_size = {max}
"""


class Prosody(TargetServer):
    name = "prosody"
    label = "Prosody"
    setup_mech = "PLAIN"

    def unavailable(self) -> str | None:
        why = ensure_debian_package("prosody", "prosody")
        if why is None and os.geteuid() != 0:
            why = "this harness runs Prosody as root (run_as_root); run it as root"
        return why

    @property
    def cfg(self) -> Path:
        return self.work / "prosody.cfg.lua"

    def version(self) -> str:
        out = subprocess.run(
            ["prosodyctl", "--config", str(self.cfg), "about"], capture_output=True, text=True
        )
        m = re.search(r"Prosody (\S+)", out.stdout)
        return f"Prosody {m.group(1)}" if m else "Prosody"

    def _shell(self, line: str, timeout: float = 600) -> str:
        out = run(["prosodyctl", "--config", str(self.cfg), "shell", line], timeout=timeout)
        if "OK:" not in out.stdout and "Result: true" not in out.stdout:
            raise RuntimeError(f"prosodyctl shell: {out.stdout[-500:]} {out.stderr[-500:]}")
        return out.stdout

    def start(self, users: Users) -> None:
        self.port = free_port()
        for d in ("data", "certs"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        cfg = PROSODY_CFG.format(
            dir=self.work,
            port=self.port,
            cert=self.cert,
            key=self.key,
            domain=DOMAIN,
            # XEP-0163 on every account: mod_pep (its defaults: one item per
            # node, access model "presence", the last item on presence)
            extra=' "pep";' if self.pep else "",
        )
        if self.muc:
            cfg += PROSODY_MUC.format(service=MUC_SERVICE, max=MUC_MAX_OCCUPANTS)
        self.cfg.write_text(cfg)
        # the first account through prosodyctl register (one process per account,
        # ~70 ms each), the rest through Prosody's admin shell (user:create) in bulk
        run(["prosodyctl", "--config", str(self.cfg), "register", users.plain[0], DOMAIN, PASSWORD])
        self._spawn(["prosody", "--config", str(self.cfg), "-F"], cwd=self.work)
        wait_port(self.port, self.proc, 60, "prosody")  # type: ignore[arg-type]
        deadline = time.monotonic() + 30
        while not (self.work / "prosody.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        names = users.accounts()
        for k in range(0, len(names), 1000):
            chunk = names[k : k + 1000]
            lua_list = ",".join(f'"{n}"' for n in chunk)
            self._shell(
                f"local t = {{{lua_list}}}; for i = 1, #t do"
                f' local ok, err = user:create(t[i].."@{DOMAIN}", "{PASSWORD}");'
                ' if not ok then return false, err end end return true, "created"'
            )
        # rosters straight into Prosody's roster storage through its rostermanager
        pairs = users.roster_pairs()
        for k in range(0, len(pairs), 100):
            lua = ",".join(
                "{" + f'"{u}",{{' + ",".join(f'"{c}@{DOMAIN}"' for c in cs) + "}}"
                for u, cs in pairs[k : k + 100]
            )
            self._shell(
                f'>local rm = require "core.rostermanager"; local t = {{{lua}}};'
                f' for i = 1, #t do local e = t[i]; local r = rm.load_roster(e[1], "{DOMAIN}");'
                ' for j = 1, #e[2] do r[e[2][j]] = { subscription = "both", groups = {} } end;'
                f' local ok, err = rm.save_roster(e[1], "{DOMAIN}", r);'
                " if not ok then return false, err end end"
                ' return true, "rosters"'
            )


EJABBERD_YML = """\
# generated by bench/run.py
hosts:
  - {domain}
loglevel: warning
certfiles:
  - {pem}
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    starttls_required: true
auth_method: internal
auth_password_format: scram
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
# what xmppd implements too; no carbons, MAM, stream management or CSI (PEP
# only with the pep scenario)
modules:
  mod_admin_extra: {{}}
  mod_blocking: {{}}
  mod_disco: {{}}
  mod_last: {{}}
  mod_offline: {{}}
  mod_ping: {{}}
  mod_privacy: {{}}
  mod_private: {{}}
  mod_roster: {{}}
  mod_time: {{}}
  mod_vcard: {{}}
  mod_version: {{}}
"""

#: appended to the modules when the run has the group chat scenario: XEP-0045
#: on conference.<domain>; anyone may create rooms (access_create: all, the
#: default, made explicit); 20 messages of history (the default, as on xmppd
#: and Prosody); the occupant limit, 200 by default both for the service and
#: for each new room, raised; no shapers and no minimum message or presence
#: intervals (the defaults, made explicit)
EJABBERD_MUC = """  mod_muc:
    hosts:
      - "{service}"
    access: all
    access_create: all
    history_size: 20
    max_users: {max}
    max_users_presence: {max}
    min_message_interval: 0
    min_presence_interval: 0
    room_shaper: none
    user_message_shaper: none
    user_presence_shaper: none
    default_room_options:
      max_users: {max}
"""

#: appended to the modules when the run has the PEP scenario: XEP-0163 on
#: every account (mod_pubsub's pep plugin; flat for its pubsub.<domain>
#: service, as in Debian's default configuration) and entity capabilities
#: (mod_caps, which asks a contact's disco#info once per caps ver and through
#: which ejabberd finds who asked for a node's notifications); node defaults
#: otherwise (PEP nodes: access model "presence", the last item sent on
#: presence)
EJABBERD_PEP = """  mod_caps: {}
  mod_pubsub:
    access_createnode: local
    plugins:
      - flat
      - pep
"""

EJABBERD_PROVISION = r"""
{ok, Terms} = file:consult("%(terms)s"),
N = '%(node)s',
H = <<"%(domain)s">>,
Users = proplists:get_value(users, Terms),
S = proplists:get_value(scram, Terms),
Ros = proplists:get_value(roster, Terms),
Par = fun(F, L) ->
    Self = self(), K = 8,
    Idx = lists:zip(lists:seq(0, length(L) - 1), L),
    Chunks = [[X || {I, X} <- Idx, I rem K == J] || J <- lists:seq(0, K - 1)],
    [spawn(fun() -> Self ! {done, [F(X) || X <- C]} end) || C <- Chunks],
    lists:append([receive {done, R} -> R end || _ <- Chunks])
end,
R1 = Par(fun(U) -> rpc:call(N, ejabberd_auth, try_register, [U, H, S]) end, Users),
Recs = [{roster, {U, H, {C, H, <<>>}}, {U, H}, {C, H, <<>>}, <<>>, both, none, [], <<>>, []}
        || {U, Cs} <- Ros, C <- Cs],
R2 = Par(fun(Rec) -> rpc:call(N, mnesia, dirty_write, [Rec]) end, Recs),
Bad = [X || X <- R1 ++ R2, X =/= ok],
io:format("registered ~p, roster items ~p, errors ~p~n",
          [length(R1), length(R2), lists:sublist(Bad, 5)]),
halt(case Bad of [] -> 0; _ -> 1 end).
"""


class Ejabberd(TargetServer):
    name = "ejabberd"
    label = "ejabberd"
    # ejabberd checks PLAIN against SCRAM-hashed storage with PBKDF2 in Erlang
    # (~25 ms of CPU per login): SCRAM is its cheaper mechanism
    setup_mech = "SCRAM-SHA-1"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.node = f"xmppdbench{os.getpid()}@localhost"
        self.cookie = secrets.token_hex(16)

    def unavailable(self) -> str | None:
        why = ensure_debian_package("ejabberdctl", "ejabberd")
        if why is None and os.geteuid() != 0:
            why = "this harness runs ejabberd as root (it switches to the ejabberd user)"
        if why is None and not shutil.which("setpriv"):
            why = "setpriv (util-linux) is missing"
        return why

    def version(self) -> str:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "ejabberd"], capture_output=True, text=True
        )
        return f"ejabberd {out.stdout.strip()}".strip()

    def ctl(self, *args: str) -> list[str]:
        # as the ejabberd user through setpriv rather than letting ejabberdctl
        # switch with su: su's PAM session (pam_limits) would cut the open-files
        # limit back to 1024, too few for the idle scenario
        return [
            "setpriv",
            "--reuid=ejabberd",
            "--regid=ejabberd",
            "--init-groups",
            "ejabberdctl",
            "--config-dir",
            str(self.work / "cfg"),
            "--spool",
            str(self.work / "spool"),
            "--logs",
            str(self.work / "logs"),
            *args,
        ]

    def ctl_env(self) -> dict[str, str]:
        return dict(os.environ, HOME=str(self.work))

    def start(self, users: Users) -> None:
        import pwd

        self.port = free_port()
        cfg = self.work / "cfg"
        for d in ("cfg", "spool", "logs"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        pem = cfg / "server.pem"
        pem.write_bytes(self.key.read_bytes() + self.cert.read_bytes())
        yml = EJABBERD_YML.format(domain=DOMAIN, pem=pem, port=self.port)
        if self.muc:
            yml += EJABBERD_MUC.format(service=MUC_SERVICE, max=max(MUC_MAX_OCCUPANTS, self.muc))
        if self.pep:
            yml += EJABBERD_PEP
        (cfg / "ejabberd.yml").write_text(yml)
        (cfg / "ejabberdctl.cfg").write_text(
            f'ERLANG_NODE={self.node}\nERL_OPTIONS="-setcookie {self.cookie}"\n'
        )
        (cfg / "inetrc").write_text("")
        pw = pwd.getpwnam("ejabberd")
        for p in [self.work, *self.work.rglob("*")]:
            os.chown(p, pw.pw_uid, pw.pw_gid)
        pem.chmod(0o600)
        self._spawn(self.ctl("foreground"), env=self.ctl_env(), cwd=self.work)
        wait_port(self.port, self.proc, 120, "ejabberd")  # type: ignore[arg-type]
        # the first account through ejabberdctl register (one Erlang VM per call,
        # ~0.5 s), the rest in bulk through the same node's API over Erlang
        # distribution; rosters straight into its mnesia roster table
        self._register_first(users.plain[0])
        creds = shared_salt_credentials(PASSWORD)["SHA-1"]
        b64 = [
            base64.b64encode(x).decode() for x in (creds.stored_key, creds.server_key, creds.salt)
        ]
        terms = self.work / "provision.terms"

        def binl(names: Sequence[str]) -> str:
            return "[" + ",".join(f'<<"{n}">>' for n in names) + "]"

        terms.write_text(
            f"{{users, {binl(users.accounts())}}}.\n"
            f'{{scram, {{scram, <<"{b64[0]}">>, <<"{b64[1]}">>, <<"{b64[2]}">>,'
            f" sha, {creds.iterations}}}}}.\n"
            "{roster, ["
            + ",".join(f'{{<<"{u}">>, {binl(cs)}}}' for u, cs in users.roster_pairs())
            + "]}.\n"
        )
        script = EJABBERD_PROVISION % {"terms": terms, "node": self.node, "domain": DOMAIN}
        out = run(
            [
                "erl",
                "-sname",
                f"benchctl{os.getpid()}",
                "-setcookie",
                self.cookie,
                "-hidden",
                "-noshell",
                "-eval",
                script,
            ],
            timeout=900,
            cwd=self.work,
        )
        lines = out.stdout.strip().splitlines()
        log(f"ejabberd: {lines[-1] if lines else 'provisioned'}")

    def _register_first(self, user: str, attempts: int = 20) -> None:
        """``ejabberdctl register``, again while the node is still creating its
        tables: its client port can open before mnesia has the ``passwd``
        table, and the call then fails with ``no_exists`` (seen once, with
        mod_muc loaded)."""
        for attempt in range(attempts):
            try:
                run(self.ctl("register", user, DOMAIN, PASSWORD), timeout=120, env=self.ctl_env())
                return
            except RuntimeError as exc:
                if "no_exists" not in str(exc) or attempt == attempts - 1:
                    raise
                time.sleep(1.0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            subprocess.run(self.ctl("stop"), capture_output=True, timeout=60, env=self.ctl_env())
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        super().stop()


#: the machine's PostgreSQL and Redis (loopback), as the cluster tests use them
PG_DSN = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


def cluster_backends_missing() -> str | None:
    """Why the cluster cannot run here (its Python extra, PostgreSQL, Redis), or None."""
    import importlib.util

    missing = [m for m in ("asyncpg", "redis", "grpc") if importlib.util.find_spec(m) is None]
    if missing:
        return f"the cluster extra is not installed ({', '.join(missing)})"
    for what, url in (("PostgreSQL", PG_DSN), ("Redis", REDIS_URL)):
        u = urllib.parse.urlsplit(url)
        with socket.socket() as sock:
            sock.settimeout(2)
            if sock.connect_ex((u.hostname or "127.0.0.1", u.port or 0)) != 0:
                return f"no {what} answers on {u.hostname}:{u.port}"
    return None


@contextlib.contextmanager
def _without_xmppd_env() -> Iterator[None]:
    """Hide the caller's XMPPD_* variables while LocalCluster copies the
    environment, as the embedded target does: only the harness configures."""
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("XMPPD_")]}
    try:
        yield
    finally:
        os.environ.update(saved)


class Cluster(TargetServer):
    """xmppd's cluster mode on this machine: ``LocalCluster`` with 2 edges,
    2 routers, 1 presence and 1 storage process against the local PostgreSQL
    (a database of its own, dropped afterwards) and Redis (a key prefix of its
    own, cleared afterwards). The processes run in the harness's process
    group under a private event loop thread (LocalCluster reads their logs)."""

    name = "cluster"
    label = "xmppd cluster"
    n_edges = 2
    n_routers = 2

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        tag = secrets.token_hex(4)
        self.database = f"xmppd_bench_{tag}"
        self.redis_prefix = f"xmppd-bench-{tag}:"
        self.cluster: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def unavailable(self) -> str | None:
        return cluster_backends_missing()

    def version(self) -> str:
        from importlib.metadata import version

        return (
            f"xmppd {version('xmppd')} (Python {platform.python_version()}), "
            f"{self.n_edges} edges, {self.n_routers} routers, 1 presence, 1 storage, "
            "1 muc, 1 pubsub"
        )

    def _run(self, coro: Any, timeout: float = 120) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, users: Users) -> None:
        from services.app.local import LocalCluster

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cluster", daemon=True)
        self.thread.start()
        atexit.register(self._kill_leftovers)
        env = {
            "XMPPD_HOSTS": DOMAIN,
            "XMPPD_TLS_CERT": str(self.cert),
            "XMPPD_TLS_KEY": str(self.key),
            "XMPPD_LOG_LEVEL": "WARNING",
            "XMPPD_C2S_DIRECT_TLS_PORT": "-1",
            **BENCH_LIMITS,
            **muc_env(self.muc),
        }
        with _without_xmppd_env():
            self.cluster = LocalCluster(
                self.work / "data",
                database=self.database,
                redis_prefix=self.redis_prefix,
                edges=self.n_edges,
                routers=self.n_routers,
                pg_dsn=PG_DSN,
                redis_url=REDIS_URL,
                extra_env=env,
            )
        taken: set[int] = set()
        for edge in self.cluster.edges:  # STARTTLS only, on ports below the ephemeral range
            port = free_port()
            while port in taken:
                port = free_port()
            taken.add(port)
            edge.env["XMPPD_C2S_PORT"] = str(port)
            edge.env["XMPPD_C2S_DIRECT_TLS_PORT"] = "-1"
        self._run(self.cluster.prepare_database(fresh=True))
        self._run(self._provision(users), timeout=900)
        self._run(self.cluster.start(), timeout=180)
        self._edges_known()
        self.port = self.ports[0]

    @staticmethod
    def _edges_known() -> None:
        # Routers and presence learn of edges from Redis on a 1 s refresh loop
        # (services/app/roles.py _refresh_loop). Until the server asked its
        # directory again on a miss (RouterService.edge), what presence sent to
        # an edge it did not know yet was dropped, such as the echo of a first
        # session's initial presence, and those logins never completed. One
        # refresh period keeps the measured phases clear of that window.
        time.sleep(1.0)

    def restart_edges(self) -> None:
        """Fresh edge processes (same ports and node names), so each edge-scaling
        phase measures edges whose memory no earlier scenario has grown."""

        async def restart() -> None:
            edges = self.cluster.edges
            await asyncio.gather(*(e.stop() for e in edges))
            for e in edges:
                await e.start(self.cluster.echo)
            for e in edges:
                await e.wait_ready()

        self._run(restart(), timeout=120)
        self._edges_known()

    async def _provision(self, users: Users) -> None:
        from services.platform.db import open_database

        db = await open_database(self.cluster.database_url)
        try:
            await provision_xmppd(db, users, parallel=8)
        finally:
            await db.close()

    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(e.c2s_ports[0] for e in self.cluster.edges)

    @property
    def pid(self) -> int:
        return int(self.cluster.edges[0].process.pid)

    def where(self) -> str:
        procs = ", ".join(f"{p.name} {p.process.pid}" for p in self.cluster.procs)
        return f"127.0.0.1 ports {', '.join(map(str, self.ports))} (pids: {procs})"

    def probe(self) -> loadgen.Probe:
        """Every cluster process; the Redis server (shared with the machine: all
        its CPU counts); the PostgreSQL backends serving this cluster's database
        (found by their process title). Memory: the cluster processes and Redis;
        PostgreSQL's backends are left out (their RSS is mostly shared buffers)."""

        def current(proc: Any) -> loadgen.Finder:  # follows a restarted process
            return lambda table: loadgen.tree(proc.process.pid)(table)

        groups = {p.name: current(p) for p in self.cluster.procs}
        port = urllib.parse.urlsplit(REDIS_URL).port
        groups["redis"] = loadgen.named("redis-server", f":{port}")
        groups["postgres"] = loadgen.named("postgres", f" {self.database} ")
        return loadgen.ProcSet(groups, memory=[g for g in groups if g != "postgres"])

    def nofile_limits(self) -> dict[str, int]:
        """Each edge's open-files limit: one descriptor per client connection."""
        out = {}
        for e in self.cluster.edges:
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{e.process.pid}/limits").read_text().splitlines():
                    if line.startswith("Max open files"):
                        out[e.name] = int(line.split()[3])
        return out

    def _kill_leftovers(self) -> None:
        """At interpreter exit, if stop() never ran: SIGTERM what still runs."""
        for p in self.cluster.procs if self.cluster is not None else ():
            if p.process is not None and p.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.loop is None:
            return
        atexit.unregister(self._kill_leftovers)
        if self.cluster is not None:
            steps = (self.cluster.stop, self.cluster.clear_redis, self.cluster.drop_database)
            for step in steps:
                try:
                    self._run(step(), timeout=90)
                except Exception as exc:
                    log(f"cluster: {step.__name__} failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                with open(self.raw / "cluster.log", "a") as fh:
                    for p in self.cluster.procs:
                        fh.writelines(f"[{p.name}] {line}\n" for line in p.log)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        if self.thread is None or not self.thread.is_alive():
            self.loop.close()
        self.loop = None


TARGET_CLASSES: dict[str, type[TargetServer]] = {
    "embedded": Embedded,
    "prosody": Prosody,
    "ejabberd": Ejabberd,
    "cluster": Cluster,
}


# ------------------------------------------------------------------ machine


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
    }


# ---------------------------------------------------------------- measuring


def run_scenario(
    name: str, fn: Callable[[], dict[str, Any]], lg: loadgen.LoadGen
) -> dict[str, Any]:
    log(f"  scenario {name}")
    try:
        res = fn()
    except Exception as exc:
        log(f"  {name} failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            if lg.alive():
                lg.close_all()
            else:
                lg.restart()
        return {"scenario": name, "error": f"{type(exc).__name__}: {exc}"}
    loadgen.report(res)
    return res


def edge_figures(r: dict[str, Any]) -> dict[str, Any]:
    """Figures of one edge-scaling phase derived from its per-process parts:
    the busiest edge's cores, the edges' CPU per login, the login rate the
    serving edges' cores alone would allow (one core each: an edge is one
    Python event loop), and the edges' memory per connection."""
    cores = {k: v for k, v in r.get("server_cores_parts", {}).items() if k.startswith("edge")}
    serving = len(r.get("ports", ())) or 1
    r["busiest_edge_cores"] = max(cores.values()) if cores else None
    if cores and r.get("logins_per_s"):
        ms = sum(cores.values()) * 1000 / r["logins_per_s"]
        r["edge_cpu_ms_per_login"] = round(ms, 2)
        r["edge_core_bound_logins_per_s"] = round(serving * 1000 / ms, 1) if ms > 0 else None
    kb = r.get("kb_per_connection_parts", {})
    r["edges_kb_per_connection"] = round(sum(v for k, v in kb.items() if k.startswith("edge")), 1)
    return r


def edge_scaling(
    lg: loadgen.LoadGen,
    probe: loadgen.Probe,
    users: Sequence[tuple[str, str]],
    sizes: Sizes,
    edge_ports: Sequence[int],
    nofile: dict[str, int],
    settle: float = 2.0,
    restart_edges: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The same logins (SCRAM, as the login storm), then held, on one edge and
    then spread over two, with the same routers, presence and storage. With
    ``restart_edges``, each phase starts on fresh edge processes: an RSS delta
    on a process whose heap earlier scenarios have grown says little, and the
    phase that ran second would reuse what the first one grew. A few unmeasured
    logins on every edge then pay each process's first-use costs (imports,
    TLS and parser set-up), which would otherwise count as per-connection
    memory."""
    out: dict[str, Any] = {
        "scenario": "edges",
        "clients": len(users),
        "mech": sizes.login_mech,
        "concurrency": sizes.concurrency,
        "edge_nofile_limits": nofile,
    }
    out["fresh_edges"] = restart_edges is not None
    for n in (1, 2):
        if restart_edges is not None:
            restart_edges()
            warm = lg.login(
                users[: 5 * len(edge_ports)], sizes.login_mech, sizes.concurrency, "lg-warm"
            )
            lg.close_all()
            if warm["failed"]:
                raise RuntimeError(f"warm-up logins failed: {warm['failures']}")
        log(f"  edges: {len(users)} logins held on {n} edge(s)")
        out[f"edges_{n}"] = loadgen.login_hold(
            lg,
            probe,
            users,
            sizes.login_mech,
            sizes.concurrency,
            ports=list(edge_ports[:n]),
            hold_s=sizes.scale_hold_s,
            settle=settle,
        )
    one, two = out["edges_1"], out["edges_2"]
    for r in (one, two):
        edge_figures(r)
    out["ratio_2_to_1"] = {
        k: round(two[k] / one[k], 2) if one.get(k) and two.get(k) is not None else None
        for k in (
            "logins_per_s",
            "server_cpu_ms_per_login",
            "kb_per_connection",
            "edges_kb_per_connection",
        )
    }
    # one descriptor per connection: the open-files limits bound what each edge can hold
    out["fd_capacity"] = {
        "edges_1": nofile.get("edge1"),
        "edges_2": sum(nofile.values()) if nofile else None,
    }
    return out


def bench_target(
    t: TargetServer, users: Users, sizes: Sizes, scenarios: Sequence[str], profile: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"target": t.name, "label": t.label}
    why = t.unavailable()
    if why:
        log(f"{t.name}: {why}")
        out.update(available=False, reason=why)
        return out
    log(f"{t.name}: starting and creating {len(users.accounts()) + 1} accounts")
    if "muc" in scenarios:
        t.muc = max(n for _r, n in sizes.muc_specs())
    t.pep = "pep" in scenarios
    t0 = time.monotonic()
    try:
        t.start(users)
    except Exception as exc:
        t.stop()
        log(f"{t.name}: could not start: {exc}")
        out.update(available=False, reason=f"could not start: {exc}")
        return out
    out.update(
        available=True, version=t.version(), port=t.port, setup_s=round(time.monotonic() - t0, 1)
    )
    log(f"{t.name}: {out['version']} on {t.where()}, setup {out['setup_s']}s")
    probe = t.probe()
    if isinstance(probe, loadgen.ProcSet):
        out["processes"] = probe.pids()
    setup_mech = t.setup_mech if sizes.setup_mech == "auto" else sizes.setup_mech
    out["setup_mech"] = setup_mech
    creds = [(u, PASSWORD) for u in users.plain]
    res: dict[str, Any] = {}
    try:
        target = loadgen.Target("127.0.0.1", t.port, DOMAIN, t.ports)
        with loadgen.LoadGen(target, sizes.workers) as lg:
            if "login" in scenarios:
                res["login"] = run_scenario(
                    "login",
                    lambda: loadgen.login_storm(
                        lg, probe, creds[: sizes.logins], sizes.login_mech, sizes.concurrency
                    ),
                    lg,
                )
            if "messages" in scenarios:
                res["messages"] = run_scenario(
                    "messages",
                    lambda: loadgen.messages(
                        lg,
                        probe,
                        creds[: sizes.msg_clients],
                        setup_mech,
                        concurrency=sizes.concurrency,
                        window=sizes.window,
                        closed_s=sizes.closed_s,
                        rate=sizes.rate,
                        rate_s=sizes.rate_s,
                        warmup=sizes.warmup_s,
                    ),
                    lg,
                )
            if "idle" in scenarios:
                res["idle"] = run_scenario(
                    "idle",
                    lambda: loadgen.idle(
                        lg, probe, creds[: sizes.idle], setup_mech, concurrency=sizes.concurrency
                    ),
                    lg,
                )
            if "presence" in scenarios:
                res["presence"] = run_scenario(
                    "presence",
                    lambda: loadgen.presence_storm(
                        lg,
                        probe,
                        [(u, PASSWORD) for u in users.presence],
                        [len(c) for c in users.contacts],
                        sizes.login_mech,
                        concurrency=sizes.concurrency,
                    ),
                    lg,
                )
            if "muc" in scenarios:
                res["muc"] = run_scenario(
                    "muc",
                    lambda: loadgen.muc(
                        lg,
                        probe,
                        creds,
                        sizes.muc_specs(),
                        setup_mech,
                        service=MUC_SERVICE,
                        senders=sizes.muc_senders,
                        window=sizes.muc_window,
                        duration=sizes.muc_s,
                        warmup=sizes.warmup_s,
                        concurrency=sizes.concurrency,
                    ),
                    lg,
                )
            if "pep" in scenarios:
                res["pep"] = run_scenario(
                    "pep",
                    lambda: loadgen.pep(
                        lg,
                        probe,
                        users.pep_creds(PASSWORD),
                        sizes.pep_specs(),
                        setup_mech,
                        window=sizes.pep_window,
                        duration=sizes.pep_s,
                        warmup=sizes.warmup_s,
                        concurrency=sizes.concurrency,
                    ),
                    lg,
                )
            if "edges" in scenarios and isinstance(t, Cluster):
                res["edges"] = run_scenario(
                    "edges",
                    lambda: edge_scaling(
                        lg,
                        probe,
                        creds[: sizes.scale_conns],
                        sizes,
                        t.ports,
                        t.nofile_limits(),
                        restart_edges=t.restart_edges,
                    ),
                    lg,
                )
            if profile:
                try:
                    out["profile"] = profile_messages(
                        t, lg, creds[: sizes.msg_clients], setup_mech, sizes
                    )
                except Exception as exc:
                    log(f"  profile failed: {type(exc).__name__}: {exc}")
                    out["profile"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        t.stop()
    out["scenarios"] = res
    return out


# ---------------------------------------------------------------- profiling


def _frame_name(frame: str) -> str:
    # py-spy raw frames: "function (path/to/file.py:123)"; drop the line number
    # and shorten paths to the package
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    fn, path = m.groups()
    if fn.startswith("0x"):
        return f"[unresolved native code] ({path})"
    for marker in ("/services/", "/site-packages/", "/lib/python3"):
        i = path.find(marker)
        if i >= 0:
            path = (
                path[i + len(marker) :]
                if marker != "/services/"
                else "services/" + path[i + len(marker) :]
            )
            break
    return f"{fn} ({path})"


def _is_python(frame: str) -> bool:
    path = frame.rsplit(" (", 1)[-1].rstrip(")")
    return path.endswith((".py", "<string>", "xmppd"))


#: frames every sample of the event loop thread shares: not worth listing
_TRIVIAL = ("<module> (xmppd)", "main (services/", "run (uvloop", "Runner.run (asyncio")


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions from py-spy raw (collapsed) stacks of the event loop thread.

    Other threads (aiosqlite's database thread waiting on its queue, which
    ``--native`` samples as if busy) are counted apart. Three views: own time
    with native frames (where the CPU goes: syscalls, TLS, lxml), own time
    folded into the nearest Python function, and inclusive time of Python
    functions.
    """
    native_own: Counter[str] = Counter()
    py_own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    main = other = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        frames = [
            _frame_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))
        ]
        if not frames:
            continue
        if any(f.startswith("Thread._bootstrap (") for f in frames):
            other += k
            continue
        main += k
        native_own[frames[-1]] += k
        py = [f for f in frames if _is_python(f)]
        if py:
            py_own[py[-1]] += k
        for f in set(py):
            if not f.startswith(_TRIVIAL):
                incl[f] += k
    pct = 100.0 / max(1, main)
    return {
        "samples": main,
        "other_thread_samples": other,
        "self_native": [(f, round(n * pct, 1)) for f, n in native_own.most_common(top)],
        "self_python": [(f, round(n * pct, 1)) for f, n in py_own.most_common(top)],
        "inclusive": [(f, round(n * pct, 1)) for f, n in incl.most_common(top + 5)],
    }


def profile_messages(
    t: TargetServer,
    lg: loadgen.LoadGen,
    users: Sequence[tuple[str, str]],
    mech: str,
    sizes: Sizes,
) -> dict[str, Any]:
    """py-spy on the server during an extra (unmeasured) closed-loop message phase."""
    spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if spy is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    log(f"  profiling {t.name} with py-spy under the closed-loop message scenario")
    r = lg.login(users, mech, sizes.concurrency, "lg-prof", pairs=True)
    if r["failed"]:
        lg.close_all()
        return {"error": f"{r['failed']} logins failed: {r['failures']}"}
    d = max(1, round(sizes.profile_s))
    svg = DOCS / f"profile-{t.name}.svg"
    raw = t.raw / f"profile-{t.name}.txt"
    base = [spy, "record", "--pid", str(t.pid), "--duration", str(d), "--rate", "100"]
    # --native adds C frames (uvloop, ssl, libc); it pauses the process per sample,
    # which only slows this unmeasured phase. Without it, time in C shows up in
    # the Python function that called it.
    outputs = [["-o", str(svg)], ["--format", "raw", "-o", str(raw)]]
    t_start = time.monotonic() + 0.3
    phase = {
        "op": "messages",
        "mode": "closed",
        "t_start": t_start,
        "warmup": 1.0,
        "duration": 2 * d + 6,
        "window": sizes.window,
        "rate": 0.0,
        "drain": 10.0,
    }
    for conn in lg.conns:
        conn.send(dict(phase))
    time.sleep(max(0.0, t_start + 1.0 - time.monotonic()))
    errors = []
    mode = "--native"
    for output in outputs:
        p = subprocess.run([*base, mode, *output], capture_output=True, text=True, timeout=d + 60)
        if p.returncode != 0 and mode == "--native":
            errors.append(f"--native failed, sampled Python frames only: {p.stderr[-300:]}")
            mode = "--nonblocking"
            p = subprocess.run(
                [*base, mode, *output], capture_output=True, text=True, timeout=d + 60
            )
        if p.returncode != 0:
            errors.append(p.stderr[-400:])
    replies = [conn.recv() for conn in lg.conns if conn.poll(2 * d + 130)]
    lg.close_all()
    out: dict[str, Any] = {
        "duration_s": d,
        "py_spy_mode": mode,
        "svg": str(svg.relative_to(ROOT)) if svg.exists() else None,
        "lost": sum(x.get("lost", 0) for x in replies),
    }
    if errors:
        out["errors"] = errors
    if raw.exists():
        out.update(summarize_profile(raw))
        write_profile_md(out, t.name)
    return out


#: what each target's profile samples, and what its other threads are
PROFILED = {
    "embedded": (
        "xmppd embedded",
        "aiosqlite's idle database thread, which native sampling counts as busy",
    ),
    "cluster": (
        "the first edge process of xmppd cluster (it parses what its clients send and"
        " delivers what the other edge sends)",
        "gRPC's completion-queue threads and Redis pub/sub",
    ),
}


def write_profile_md(p: dict[str, Any], target: str = "embedded") -> None:
    what, others = PROFILED[target]

    def rows(items: list[tuple[str, float]]) -> list[str]:
        return [
            "| % of samples | function |",
            "|---:|---|",
            *[f"| {x} | `{f}` |" for f, x in items],
        ]

    lines = [
        f"# py-spy profile of {what} under the closed-loop 1:1 message scenario",
        "",
        f"Generated by `make bench`: py-spy `{p['py_spy_mode']}` at 100 Hz for "
        f"{p['duration_s']} s while the message clients run a closed loop (an extra phase, "
        f"not part of the measured figures). {p['samples']} samples of the event loop "
        f"thread; {p.get('other_thread_samples', 0)} samples of other threads ({others}) "
        "are left out. "
        f"Flame graph (all threads): [profile-{target}.svg](profile-{target}.svg).",
        "",
        "## Own time, native frames included (where the CPU goes)",
        "",
        *rows(p["self_native"]),
        "",
        "## Own time by Python function (native callees folded into their caller)",
        "",
        *rows(p["self_python"]),
        "",
        "## Inclusive time of Python functions",
        "",
        *rows(p["inclusive"]),
        "",
    ]
    (DOCS / f"profile-{target}.md").write_text("\n".join(lines))


# ------------------------------------------------------------------- report

#: (scenario, key path, label, better) for the summary table
METRICS: list[tuple[str, str, str, str]] = [
    ("login", "logins_per_s", "login storm: logins/s", "higher"),
    ("login", "latency_ms.p50", "login storm: latency p50 (ms)", "lower"),
    ("login", "latency_ms.p99", "login storm: latency p99 (ms)", "lower"),
    ("login", "server_cpu_ms_per_login", "login storm: server CPU per login (ms)", "lower"),
    ("messages", "closed.msgs_per_s", "1:1 closed loop: delivered msgs/s", "higher"),
    ("messages", "closed.latency_ms.p50", "1:1 closed loop: latency p50 (ms)", "lower"),
    ("messages", "closed.latency_ms.p99", "1:1 closed loop: latency p99 (ms)", "lower"),
    (
        "messages",
        "closed.server_cpu_us_per_msg",
        "1:1 closed loop: server CPU per msg (us)",
        "lower",
    ),
    ("messages", "rate.msgs_per_s", "1:1 fixed rate: delivered msgs/s (= target?)", "higher"),
    ("messages", "rate.latency_ms.p50", "1:1 fixed rate: latency p50 (ms)", "lower"),
    ("messages", "rate.latency_ms.p99", "1:1 fixed rate: latency p99 (ms)", "lower"),
    ("messages", "rate.server_cpu_us_per_msg", "1:1 fixed rate: server CPU per msg (us)", "lower"),
    ("messages", "first_message.latency_ms.p99", "1:1 first message per user: p99 (ms)", "lower"),
    ("messages", "lost_total", "1:1: lost messages (must be 0)", "lower"),
    ("idle", "kb_per_connection", "idle: server memory per connection (KB)", "lower"),
    ("presence", "presences_per_s", "presence storm: presence stanzas delivered/s", "higher"),
    ("presence", "wall_s", "presence storm: until all saw all contacts (s)", "lower"),
    (
        "presence",
        "presences_per_user",
        "presence storm: stanzas per user (min contacts+1)",
        "lower",
    ),
    ("presence", "server_cpu_ms_per_login", "presence storm: server CPU per login (ms)", "lower"),
    ("presence", "missing_presences", "presence storm: missing presences (must be 0)", "lower"),
    ("messages", "closed.server_cores", "server CPU used, closed loop (cores)", "info"),
    ("login", "loadgen_cores", "load generator CPU, login storm (cores)", "info"),
    ("messages", "closed.loadgen_cores", "load generator CPU, closed loop (cores)", "info"),
    ("login", "machine_busy_cores", "whole machine busy, login storm (cores)", "info"),
    ("messages", "closed.machine_busy_cores", "whole machine busy, closed loop (cores)", "info"),
    ("messages", "rate.machine_busy_cores", "whole machine busy, fixed rate (cores)", "info"),
]


def metric(target: dict[str, Any], scenario: str, path: str) -> float | None:
    res = target.get("scenarios", {}).get(scenario)
    if not res or "error" in res:
        return None
    if path == "presences_per_user" and path not in res:  # results of older runs
        return res["presences_delivered"] / max(1, res["ok"])
    if path == "lost_total":
        vals = [res[k]["lost"] for k in ("first_message", "closed", "rate") if k in res]
        return float(sum(vals)) if vals else None
    cur: Any = res
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) else None


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(ours: float | None, peer: float | None, better: str) -> str:
    if ours is None or peer is None or better == "info":
        return "-"
    if peer == 0 or ours == 0:
        return "equal" if ours == peer else "-"
    r = ours / peer
    good = r >= 1 if better == "higher" else r <= 1
    if abs(r - 1) < 0.05:
        return f"{r:.2f} (same)"
    return f"{r:.2f} ({'better' if good else 'worse'})"


#: our targets with ratio columns, and their short name in the column headers
OURS = (("embedded", "xmppd"), ("cluster", "cluster"))

#: how the cluster's CPU parts are grouped in its breakdown table
CLUSTER_PARTS = (
    ("edge", "edges"),
    ("router", "routers"),
    ("presence", "presence"),
    ("storage", "storage"),
    ("muc", "group chat (muc)"),
    ("pubsub", "publish-subscribe (pubsub)"),
    ("redis", "Redis (shared with the machine)"),
    ("postgres", "PostgreSQL backends of its database"),
)


def _group(part: str) -> str:
    return re.sub(r"\d+$", "", part)


def cluster_breakdown(t: dict[str, Any]) -> list[str]:
    """Per process kind: the cluster's server CPU per unit of work, and memory."""
    sc = t.get("scenarios", {})

    def ok(name: str) -> dict[str, Any]:
        r = sc.get(name)
        return r if r and "error" not in r else {}

    login, msgs, idle_, pres = ok("login"), ok("messages"), ok("idle"), ok("presence")
    cols: list[tuple[str, dict[str, float], float]] = []  # (header, parts, scale)
    if login.get("server_cpu_parts_s"):
        cols.append(
            (
                "login storm: ms per login",
                login["server_cpu_parts_s"],
                1000 / max(1, login["ok"]),
            )
        )
    for phase, head in (("closed", "closed loop"), ("rate", "fixed rate")):
        ph = msgs.get(phase, {})
        if ph.get("server_cpu_parts_s"):
            cols.append(
                (
                    f"{head}: us per msg",
                    ph["server_cpu_parts_s"],
                    1e6 / max(1, ph["delivered_in_window"]),
                )
            )
    if pres.get("server_cpu_parts_s"):
        cols.append(
            (
                "presence storm: ms per login",
                pres["server_cpu_parts_s"],
                1000 / max(1, pres["ok"]),
            )
        )
    if idle_.get("kb_per_connection_parts"):
        cols.append(("idle: KB per connection", idle_["kb_per_connection_parts"], 1.0))
    if not cols:
        return []
    lines = [
        "",
        f"**{t['label']}: where the server CPU and memory go** (summed in the table above)",
        "",
        "| process | " + " | ".join(c[0] for c in cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for key, label in CLUSTER_PARTS:
        row = []
        for _head, parts, scale in cols:
            vals = [v for k, v in parts.items() if _group(k) == key]
            row.append(fmt(sum(vals) * scale) if vals else "-")
        n = len({k for _h, parts, _s in cols for k in parts if _group(k) == key})
        lines.append(f"| {label}{f' ({n})' if n > 1 else ''} | " + " | ".join(row) + " |")
    lines.append(
        "| **total** | "
        + " | ".join(fmt(sum(parts.values()) * scale) for _h, parts, scale in cols)
        + " |"
    )
    return lines


#: rows of the edge-scaling table: (key path in edges_N, label, better)
EDGE_ROWS: list[tuple[str, str, str]] = [
    ("logins_per_s", "logins/s", "higher"),
    ("latency_ms.p50", "login latency p50 (ms)", "lower"),
    ("latency_ms.p99", "login latency p99 (ms)", "lower"),
    ("server_cpu_ms_per_login", "server CPU per login (ms)", "lower"),
    ("server_cores", "server CPU during the storm (cores)", "info"),
    ("busiest_edge_cores", "busiest edge during the storm (cores)", "info"),
    ("edge_cpu_ms_per_login", "edges' CPU per login (ms)", "lower"),
    (
        "edge_core_bound_logins_per_s",
        "logins/s the serving edges' own cores would allow (1 core each)",
        "higher",
    ),
    ("loadgen_cores", "load generator CPU (cores)", "info"),
    ("machine_busy_cores", "whole machine busy (cores)", "info"),
    ("kb_per_connection", "memory per held connection, all processes (KB)", "lower"),
    ("edges_kb_per_connection", "memory per held connection, edges only (KB)", "lower"),
    ("idle_server_cpu_pct", "server CPU with all held, idle (% of a core)", "lower"),
]


def _path(d: dict[str, Any], path: str) -> float | None:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) else None


def edge_scaling_table(t: dict[str, Any]) -> list[str]:
    e = t.get("scenarios", {}).get("edges")
    if not e or "error" in e or "edges_2" not in e:
        return []
    one, two = edge_figures(dict(e["edges_1"])), edge_figures(dict(e["edges_2"]))
    lines = [
        "",
        f"**{t['label']}: 1 edge vs 2 edges** (same routers, presence and storage; "
        f"{e['clients']} {e['mech']} logins, {e['concurrency']} in flight, held, "
        "then closed; 1 edge first"
        + (", each phase on freshly started edge processes)" if e.get("fresh_edges") else ")"),
        "",
        "| metric | better | 1 edge | 2 edges | 2 edges / 1 edge |",
        "|---|---|---|---|---|",
    ]
    for path, label, better in EDGE_ROWS:
        a, b = _path(one, path), _path(two, path)
        r = "-" if a is None or b is None or a == 0 else f"{b / a:.2f}"
        shown = "" if better == "info" else better
        lines.append(f"| {label} | {shown} | {fmt(a)} | {fmt(b)} | {r} |")
    cap = e.get("fd_capacity", {})
    if cap.get("edges_1"):
        lines.append(
            f"| connections the serving edges' open-files limits allow | higher "
            f"| {cap['edges_1']:,} | {cap['edges_2']:,} | {cap['edges_2'] / cap['edges_1']:.2f} |"
        )
    fails = one.get("failed", 0) + two.get("failed", 0)
    if fails:
        lines.append(
            f"| failed logins (must be 0) | lower | {one.get('failed', 0)} "
            f"| {two.get('failed', 0)} | - |"
        )
    return lines


#: rows of the group chat table, per phase: (key path in the phase, label, better)
MUC_ROWS: list[tuple[str, str, str]] = [
    ("deliveries_per_s", "deliveries/s (messages fanned out)", "higher"),
    ("latency_ms.p50", "delivery latency p50 (ms)", "lower"),
    ("latency_ms.p99", "delivery latency p99 (ms)", "lower"),
    ("server_cpu_us_per_delivery", "server CPU per delivery (us)", "lower"),
    ("lost", "lost deliveries (must be 0)", "lower"),
    ("posted_per_s", "messages posted/s", "info"),
    ("server_cores", "server CPU used (cores)", "info"),
    ("loadgen_cores", "load generator CPU (cores)", "info"),
    ("machine_busy_cores", "whole machine busy (cores)", "info"),
    ("join.wall_s", "joins: all occupants in, rooms ready (s)", "info"),
    ("join.missing_subjects", "joins answered without the subject (must be 0)", "lower"),
]


def muc_phase_label(key: str, phase: dict[str, Any] | None = None) -> str:
    """``"10x100"`` -> ``"10 rooms x 100"``."""
    rooms, _, size = key.partition("x")
    if phase:
        rooms, size = str(phase.get("rooms", rooms)), str(phase.get("occupants_per_room", size))
    return f"{rooms} room{'s' if rooms != '1' else ''} x {size}"


def phase_metric(target: dict[str, Any], scenario: str, phase: str, path: str) -> float | None:
    """A figure of one phase of a phased scenario (``muc``, ``pep``)."""
    res = target.get("scenarios", {}).get(scenario)
    if not res or "error" in res:
        return None
    ph = res.get("phases", {}).get(phase)
    if not ph or "error" in ph:
        return None
    return _path(ph, path)


def muc_metric(target: dict[str, Any], phase: str, path: str) -> float | None:
    return phase_metric(target, "muc", phase, path)


def phases_markdown(
    run: dict[str, Any],
    scenario: str,
    rows: Sequence[tuple[str, str, str]],
    title: str,
    intro: str,
    label_of: Callable[[str, dict[str, Any]], str],
    unit: str,
    short: str,
) -> list[str]:
    """The table of a phased scenario (one block of ``rows`` per phase) with
    ratios to each peer, and the cluster's server CPU per ``unit`` by process."""
    targets = {t["target"]: t for t in run["targets"]}
    cols = [n for n in TARGETS if n in targets]
    phases: dict[str, dict[str, Any]] = {}
    for c in cols:
        found = targets[c].get("scenarios", {}).get(scenario, {}).get("phases", {})
        for key, ph in found.items():
            phases.setdefault(key, ph)
    if not phases:
        return []
    peers = [n for n in ("prosody", "ejabberd") if targets.get(n, {}).get("available")]
    ours = [
        (n, short) for n, short in OURS if n == "embedded" or targets.get(n, {}).get("available")
    ]
    head = [title, "better", *[targets[c]["label"] for c in cols]]
    head += [f"{short} / {targets[p]['label']}" for _n, short in ours for p in peers]
    lines = [
        "",
        f"**{title}**: {intro}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for key, ph in phases.items():
        for path, label, better in rows:
            row = [f"{label_of(key, ph)}: {label}", better if better != "info" else ""]
            for c in cols:
                t = targets[c]
                shown = fmt(phase_metric(t, scenario, key, path))
                row.append(shown if t.get("available") else "not measured")
            for n, _short in ours:
                for p in peers:
                    row.append(
                        ratio(
                            phase_metric(targets.get(n, {}), scenario, key, path),
                            phase_metric(targets[p], scenario, key, path),
                            better,
                        )
                    )
            lines.append("| " + " | ".join(row) + " |")
    cluster = targets.get("cluster", {})
    cph = cluster.get("scenarios", {}).get(scenario, {}).get("phases", {})
    parts = {k: v for k, v in cph.items() if v.get("server_cpu_parts_s")}
    if cluster.get("available") and parts:
        lines += [
            "",
            f"**{cluster['label']}, {short}: server CPU per {unit} by "
            "process (us)** and the busiest process of each kind (cores)",
            "",
            "| process | "
            + " | ".join(
                f"{lbl}: us per {unit} | {lbl}: busiest (cores)"
                for lbl in (label_of(k, v) for k, v in parts.items())
            )
            + " |",
            "|" + "---|" * (2 * len(parts) + 1),
        ]
        for kind, label in CLUSTER_PARTS:
            row = []
            for ph in parts.values():
                vals = {k: v for k, v in ph["server_cpu_parts_s"].items() if _group(k) == kind}
                per = 1e6 / max(1, ph["delivered_in_window"])
                cores = max(vals.values()) / ph["duration_s"] if vals else None
                row += [fmt(sum(vals.values()) * per) if vals else "-", fmt(cores)]
            lines.append(f"| {label} | " + " | ".join(row) + " |")
    return lines


def muc_markdown(run: dict[str, Any]) -> list[str]:
    """The group chat table (one block of rows per room size) with ratios to
    each peer, and the cluster's server CPU per delivery by process."""
    return phases_markdown(
        run,
        "muc",
        MUC_ROWS,
        "Group chat (XEP-0045)",
        "rooms x occupants, one connection per occupant; "
        "a delivery is one occupant receiving one message (the sender's echo included)",
        muc_phase_label,
        "delivery",
        "group chat",
    )


#: rows of the PEP table, per phase: (key path in the phase, label, better)
PEP_ROWS: list[tuple[str, str, str]] = [
    ("notifications_per_s", "notifications/s", "higher"),
    ("latency_ms.p50", "notification latency p50 (ms)", "lower"),
    ("latency_ms.p99", "notification latency p99 (ms)", "lower"),
    ("server_cpu_us_per_notification", "server CPU per notification (us)", "lower"),
    ("lost", "lost notifications (must be 0)", "lower"),
    ("errors", "error stanzas (must be 0)", "lower"),
    ("duplicates", "duplicate notifications (a contact's second copy)", "lower"),
    ("to_publisher", "notifications to the publisher's own session (no caps)", "info"),
    ("publishes_per_s", "publishes/s", "info"),
    ("server_cores", "server CPU used (cores)", "info"),
    ("loadgen_cores", "load generator CPU (cores)", "info"),
    ("machine_busy_cores", "whole machine busy (cores)", "info"),
    ("prime.wall_s", "until every contact was notified (s)", "info"),
    ("prime.caps_queries", "caps queries (disco#info) the server sent", "info"),
]


def pep_phase_label(key: str, phase: dict[str, Any] | None = None) -> str:
    """``"5x100"`` -> ``"5 publishers x 100 contacts"``."""
    pubs, _, size = key.partition("x")
    if phase:
        pubs = str(phase.get("publishers", pubs))
        size = str(phase.get("contacts_per_publisher", size))
    return f"{pubs} publisher{'s' if pubs != '1' else ''} x {size} contacts"


def pep_markdown(run: dict[str, Any]) -> list[str]:
    """The PEP table (one block of rows per phase) with ratios to each peer,
    and the cluster's server CPU per notification by process."""
    return phases_markdown(
        run,
        "pep",
        PEP_ROWS,
        "PEP (XEP-0163)",
        "publishers x contacts, one connection each, every contact in a mutual "
        "subscription with its publisher and asking for the node's notifications "
        "(entity capabilities); a notification is one contact receiving one published item",
        pep_phase_label,
        "notification",
        "PEP",
    )


def results_markdown(run: dict[str, Any]) -> str:
    targets = {t["target"]: t for t in run["targets"]}
    cols = [n for n in TARGETS if n in targets]
    peers = [n for n in ("prosody", "ejabberd") if targets.get(n, {}).get("available")]
    ours = [
        (n, short) for n, short in OURS if n == "embedded" or targets.get(n, {}).get("available")
    ]
    head = ["metric", "better", *[targets[c]["label"] for c in cols]]
    head += [f"{short} / {targets[p]['label']}" for _n, short in ours for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scen, path, label, better in METRICS:
        row = [label, better if better != "info" else ""]
        for c in cols:
            t = targets[c]
            row.append(fmt(metric(t, scen, path)) if t.get("available") else "not measured")
        for n, _short in ours:
            mine = targets.get(n, {})
            for p in peers:
                row.append(ratio(metric(mine, scen, path), metric(targets[p], scen, path), better))
        lines.append("| " + " | ".join(row) + " |")
    cluster = targets.get("cluster", {})
    if cluster.get("available"):
        lines += cluster_breakdown(cluster)
        lines += edge_scaling_table(cluster)
    lines += muc_markdown(run)
    lines += pep_markdown(run)
    s = run["sizes"]
    load = ", ".join(f"{x:.2f}" for x in run["machine"]["loadavg_at_start"])
    notes = [
        "",
        f"Run {run['stamp']} on {run['machine']['cpus']} CPUs ({run['machine']['cpu_model']}), "
        f"load average at start {load}. "
        f"Sizes: {s['logins']} logins ({s['login_mech']}, {s['concurrency']} in flight), "
        f"{s['msg_clients']} message clients in pairs (window {s['window']} per direction, "
        f"{s['closed_s']:g} s closed loop, then {s['rate']:g} msg/s for {s['rate_s']:g} s), "
        f"{s['idle']} idle connections, {s['presence_users']} presence users with "
        f"{s['contacts']} contacts; {s['workers']} load generator processes."
        + (
            f" Edge scaling (cluster): {s['scale_conns']} logins held on 1, then 2 edges."
            if "edges" in run.get("scenarios", ()) and "scale_conns" in s
            else ""
        )
        + (
            f" Group chat: {s['muc_rooms']} (rooms x occupants, one phase each), "
            f"{s['muc_senders']} occupants per room posting with {s['muc_window']} messages "
            f"each in flight, {s['muc_s']:g} s measured per phase."
            if "muc" in run.get("scenarios", ()) and "muc_rooms" in s
            else ""
        )
        + (
            f" PEP: {s['pep_sizes']} (publishers x contacts, one phase each"
            + (f", {s['pep_contacts']} contacts each" if s.get("pep_contacts") else "")
            + f"), {s['pep_window']} publishes in flight per publisher, "
            f"{s['pep_s']:g} s measured per phase."
            if "pep" in run.get("scenarios", ()) and "pep_sizes" in s
            else ""
        ),
        "Ratios are ours (xmppd embedded, xmppd cluster) divided by the peer; 'better' "
        "follows the metric's direction.",
    ]
    if cluster.get("available"):
        notes.append(
            "The cluster's server CPU is the sum over its processes (edges, routers, presence, "
            "storage), the Redis server (shared with the rest of the machine: all of its CPU "
            "counts) and the PostgreSQL backends of its database; its memory is the cluster "
            "processes' and Redis's RSS. Clients alternate between the two edges by index, so "
            "both users of a message pair are on different edges."
        )
    for c in cols:
        t = targets[c]
        if t.get("available"):
            notes.append(
                f"- {t['label']}: {t.get('version', '')}, setup logins with {t.get('setup_mech')}"
            )
        else:
            notes.append(f"- {t['label']}: not measured ({t.get('reason')})")
    errors = [
        f"- {targets[c]['label']} / {name}: {res['error']}"
        for c in cols
        for name, res in targets[c].get("scenarios", {}).items()
        if "error" in res
    ]
    if errors:
        notes += ["", "Scenarios that failed:", *errors]
    return "\n".join(lines + notes) + "\n"


CHARTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "login",
        "Login storm",
        [
            ("logins_per_s", "logins/s (higher is better)"),
            ("server_cpu_ms_per_login", "server CPU per login, ms (lower is better)"),
        ],
    ),
    (
        "messages",
        "1:1 messages",
        [
            ("closed.msgs_per_s", "closed loop: delivered msg/s (higher is better)"),
            ("closed.server_cpu_us_per_msg", "server CPU per message, us (lower is better)"),
            ("rate.latency_ms.p99", "p99 latency at fixed rate, ms (lower is better)"),
        ],
    ),
    (
        "idle",
        "Idle connections",
        [("kb_per_connection", "server memory per connection, KB (lower is better)")],
    ),
    (
        "presence",
        "Presence storm",
        [
            ("presences_per_s", "presence stanzas delivered/s (higher is better)"),
            ("server_cpu_ms_per_login", "server CPU per login, ms (lower is better)"),
        ],
    ),
]


def write_charts(run: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no charts (pip install -e '.[bench]')")
        return []
    targets = [t for t in run["targets"] if t.get("available")]
    colors = {
        "embedded": "#3b7dd8",
        "prosody": "#e8a33d",
        "ejabberd": "#5aa469",
        "cluster": "#999999",
    }
    written = []
    for scen, title, panels in CHARTS:
        if not any(scen in t.get("scenarios", {}) for t in targets):
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (path, label) in zip(axes[0], panels, strict=True):
            names = [t["label"] for t in targets]
            vals = [metric(t, scen, path) or 0.0 for t in targets]
            bars = ax.bar(names, vals, color=[colors.get(t["target"], "#777") for t in targets])
            ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=8)
            ax.set_title(label, fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
            ax.margins(y=0.15)
        fig.suptitle(f"{title} ({run['stamp']}, shared 2-core machine)", fontsize=10)
        fig.tight_layout()
        out = DOCS / f"{scen}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(str(out.relative_to(ROOT)))
    cluster = next((t for t in targets if t["target"] == "cluster"), None)
    edges = (cluster or {}).get("scenarios", {}).get("edges", {})
    if "edges_2" in edges:
        panels = [
            ("logins_per_s", "logins/s (higher is better)"),
            ("server_cpu_ms_per_login", "server CPU per login, ms (lower is better)"),
            ("busiest_edge_cores", "busiest edge during the storm, cores"),
            ("edges_kb_per_connection", "edges' memory per connection, KB (lower is better)"),
        ]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
        for ax, (path, label) in zip(axes[0], panels, strict=True):
            vals = [_path(edge_figures(dict(edges[f"edges_{n}"])), path) or 0.0 for n in (1, 2)]
            bars = ax.bar(["1 edge", "2 edges"], vals, color=["#bbbbbb", "#777777"])
            ax.bar_label(bars, labels=[fmt(v) for v in vals], fontsize=8)
            ax.set_title(label, fontsize=9)
            ax.margins(y=0.15)
        fig.suptitle(
            f"xmppd cluster, 1 vs 2 edges, {edges['clients']} logins held "
            f"({run['stamp']}, shared 2-core machine)",
            fontsize=10,
        )
        fig.tight_layout()
        out = DOCS / "edges.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(str(out.relative_to(ROOT)))
    return written


def update_doc(table: str) -> bool:
    if not BENCH_DOC.exists():
        return False
    text = BENCH_DOC.read_text()
    i, j = text.find(MARK_START), text.find(MARK_END)
    if i < 0 or j < i:
        return False
    BENCH_DOC.write_text(text[: i + len(MARK_START)] + "\n" + table + text[j:])
    return True


def write_docs(run_info: dict[str, Any], no_docs: bool = False) -> None:
    table = results_markdown(run_info)
    print()
    print(table)
    if no_docs:
        return
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "results.md").write_text("# Latest `make bench` results\n\n" + table)
    charts = write_charts(run_info)
    log(f"docs: docs/bench/results.md, {', '.join(charts)}")
    if update_doc(table):
        log("docs/benchmarks.md results section updated")


# --------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = Sizes()
    ap = argparse.ArgumentParser(
        description="Benchmark xmppd against Prosody and ejabberd (issue #5)."
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run (~2 min)")
    ap.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma separated, from {','.join(TARGETS)}"
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma separated, from {','.join(SCENARIOS)}",
    )
    ap.add_argument("--logins", type=int, help=f"login storm clients ({d.logins})")
    ap.add_argument("--msg-clients", type=int, help=f"message clients, in pairs ({d.msg_clients})")
    ap.add_argument("--closed-s", type=float, help=f"closed-loop seconds measured ({d.closed_s:g})")
    ap.add_argument("--rate", type=float, help=f"fixed rate, messages/s in total ({d.rate:g})")
    ap.add_argument("--rate-s", type=float, help=f"fixed-rate seconds measured ({d.rate_s:g})")
    ap.add_argument(
        "--window", type=int, help=f"closed loop: messages in flight per direction ({d.window})"
    )
    ap.add_argument("--idle", type=int, help=f"idle connections ({d.idle})")
    ap.add_argument("--presence-users", type=int, help=f"presence storm users ({d.presence_users})")
    ap.add_argument(
        "--contacts", type=int, help=f"roster size of each presence user ({d.contacts})"
    )
    ap.add_argument("--workers", type=int, help=f"load generator processes ({d.workers})")
    ap.add_argument("--concurrency", type=int, help=f"logins in flight ({d.concurrency})")
    ap.add_argument(
        "--login-mech", choices=loadgen.MECHANISMS, help=f"login/presence storms ({d.login_mech})"
    )
    ap.add_argument(
        "--setup-mech",
        choices=("auto", *loadgen.MECHANISMS),
        help="logins of the message and idle scenarios; auto = each server's cheaper one",
    )
    ap.add_argument(
        "--scale-conns",
        type=int,
        help=f"edge scaling (cluster): logins held on 1, then 2 edges ({d.scale_conns})",
    )
    ap.add_argument(
        "--scale-hold-s",
        type=float,
        help=f"edge scaling: seconds all are held idle ({d.scale_hold_s:g})",
    )
    ap.add_argument(
        "--muc-rooms",
        help=f"group chat phases, ROOMSxOCCUPANTS comma separated ({d.muc_rooms})",
    )
    ap.add_argument(
        "--muc-senders", type=int, help=f"group chat: occupants posting per room ({d.muc_senders})"
    )
    ap.add_argument(
        "--muc-window",
        type=int,
        help=f"group chat: messages in flight per posting occupant ({d.muc_window})",
    )
    ap.add_argument(
        "--muc-s", type=float, help=f"group chat: closed-loop seconds measured ({d.muc_s:g})"
    )
    ap.add_argument(
        "--pep-sizes",
        help=f"PEP phases, PUBLISHERSxCONTACTS comma separated ({d.pep_sizes})",
    )
    ap.add_argument(
        "--pep-contacts",
        type=int,
        help="PEP: contacts of each publisher in every phase (default: as in --pep-sizes)",
    )
    ap.add_argument(
        "--pep-window", type=int, help=f"PEP: publishes in flight per publisher ({d.pep_window})"
    )
    ap.add_argument("--pep-s", type=float, help=f"PEP: closed-loop seconds measured ({d.pep_s:g})")
    ap.add_argument("--profile-s", type=float, help=f"py-spy seconds per output ({d.profile_s:g})")
    ap.add_argument("--no-profile", action="store_true", help="skip the py-spy profile of xmppd")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/ (results JSON only)")
    ap.add_argument("--keep", action="store_true", help="keep the servers' temporary folders")
    ap.add_argument(
        "--report",
        metavar="JSON",
        help="measure nothing: rewrite the table, charts and docs section from a results file",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sizes = Sizes.quick() if a.quick else Sizes()
    for k in asdict(sizes):
        v = getattr(a, k, None)
        if v is not None:
            setattr(sizes, k, v)
    targets = [x for x in a.targets.split(",") if x]
    scenarios = [x for x in a.scenarios.split(",") if x]
    bad = [x for x in targets if x not in TARGETS] + [x for x in scenarios if x not in SCENARIOS]
    if bad:
        print(f"unknown target or scenario: {', '.join(bad)}", file=sys.stderr)
        return 2
    if a.report:
        run_info = json.loads(Path(a.report).read_text())
        write_docs(run_info, no_docs=a.no_docs)
        return 0
    try:
        sizes.muc_specs()
    except ValueError as exc:
        print(f"--muc-rooms: {exc}", file=sys.stderr)
        return 2
    try:
        sizes.pep_specs()
    except ValueError as exc:
        print(f"--pep-sizes: {exc}", file=sys.stderr)
        return 2
    nofile = loadgen.raise_nofile()
    need = max(sizes.logins, sizes.msg_clients, sizes.idle, sizes.presence_users)
    need = max(need, sizes.muc_clients())
    if "pep" in scenarios:
        need = max(need, sizes.pep_clients())
    need = max(need, sizes.scale_conns) + 500
    if nofile < need:
        log(f"warning: open-files limit {nofile} < {need}; large scenarios may fail")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = RESULTS / "raw" / stamp
    raw.mkdir(parents=True, exist_ok=True)
    if not a.no_docs:
        DOCS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="xmppd-bench-"))
    work.chmod(0o755)  # ejabberd runs as its own user
    from services.platform.tls import ensure_self_signed

    cert, key = work / "cert.pem", work / "key.pem"
    ensure_self_signed(cert, key, [DOMAIN])  # one certificate (EC P-256) for every server
    key.chmod(0o644)
    users = Users.make(sizes, pep="pep" in scenarios)
    run_info: dict[str, Any] = {
        "stamp": stamp,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "sizes": asdict(sizes),
        "scenarios": scenarios,
        "targets": [],
    }
    t_run = time.monotonic()
    try:
        for name in targets:
            t = TARGET_CLASSES[name](work, cert, key, raw)
            profile = (
                name in PROFILED and not a.no_profile and not a.no_docs and "messages" in scenarios
            )
            run_info["targets"].append(bench_target(t, users, sizes, scenarios, profile))
            time.sleep(2)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    run_info["machine"]["loadavg_at_end"] = list(os.getloadavg())
    run_info["wall_s"] = round(time.monotonic() - t_run, 1)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(run_info, indent=1) + "\n")
    log(f"summary: {out.relative_to(ROOT)}; total {run_info['wall_s']}s")
    write_docs(run_info, no_docs=a.no_docs)
    failed = [
        t["target"]
        for t in run_info["targets"]
        if t.get("available") and any("error" in r for r in t.get("scenarios", {}).values())
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
