#!/usr/bin/env node
// Converse.js in headless Chromium: log in over WebSocket (RFC 7395) or BOSH
// (XEP-0206), open a chat with `peer`, type `message`, wait until the peer's
// reply `expect_reply` shows in the chat, take a screenshot.
//
// Arguments: one JSON object, as argv[2] or in the env CONVERSE_CHAT_ARGS:
//   {transport: "websocket"|"bosh", url, jid, password, peer, message,
//    expect_reply, screenshot, timeout_s (default 60), headless (default true)}
// Prints one JSON line on stdout: {ok: true, ...} (exit 0) or
// {ok: false, error, log: [last Converse/browser log lines]} (exit 1).
// The browser console goes to stderr. Stops by itself within timeout_s and
// never leaves Chromium running (playwright kills it on exit as well).
//
// Needs: `npm ci` here (converse.js, playwright-core) and Debian chromium
// (/usr/bin/chromium, or CHROMIUM_PATH). scripts/install-tools.sh does both.

import { createServer } from 'node:http';
import { mkdtempSync, rmSync, createReadStream, statSync, mkdirSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize, resolve, sep, extname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const DIST = join(HERE, 'node_modules', 'converse.js', 'dist');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];
const LOG_KEEP = 200; // console lines kept for the failure report
const LOG_TAIL = 60; // of which reported
const t0 = Date.now();

const logLines = [];
function remember(line) {
  logLines.push(line.length > 2000 ? line.slice(0, 2000) + '...' : line);
  if (logLines.length > LOG_KEEP) logLines.shift();
}
function note(msg) {
  const line = `[converse_chat +${((Date.now() - t0) / 1000).toFixed(2)}s] ${msg}`;
  process.stderr.write(line + '\n');
  remember(line);
}

function parseArgs() {
  const raw = process.argv[2] ?? process.env.CONVERSE_CHAT_ARGS;
  if (!raw) throw new Error('pass the arguments as one JSON object (argv[2] or CONVERSE_CHAT_ARGS)');
  const a = JSON.parse(raw);
  for (const k of ['transport', 'url', 'jid', 'password', 'peer', 'message', 'expect_reply']) {
    if (typeof a[k] !== 'string' || !a[k]) throw new Error(`missing argument ${k}`);
  }
  if (!['websocket', 'bosh'].includes(a.transport)) throw new Error(`transport must be websocket or bosh, not ${a.transport}`);
  a.timeout_s = Number(a.timeout_s ?? 60);
  if (!(a.timeout_s > 0)) throw new Error('timeout_s must be > 0');
  a.peer = a.peer.split('/')[0];
  a.headless = a.headless ?? true;
  return a;
}

// ---- the page and a tiny static server ------------------------------------

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.json': 'application/json', '.map': 'application/json', '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.jpg': 'image/jpeg', '.gif': 'image/gif',
  '.ico': 'image/x-icon', '.woff': 'font/woff', '.woff2': 'font/woff2', '.ttf': 'font/ttf',
  '.eot': 'application/vnd.ms-fontobject', '.mp3': 'audio/mpeg', '.ogg': 'audio/ogg',
};

// Runs in the page: a plugin records what the test needs on window.__xt.
const PAGE_SCRIPT = `
import converse from '/dist/converse.min.js';
const cfg = JSON.parse(document.getElementById('xt-config').textContent);
const xt = window.__xt = { connected: false, status: [], incoming: [], errors: [], api: null };
window.addEventListener('error', (e) => xt.errors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => xt.errors.push('unhandled rejection: ' + String(e.reason && (e.reason.stack || e.reason))));
converse.plugins.add('xmppd-test', {
  initialize () {
    const { _converse } = this;
    const { api } = _converse;
    const { Strophe } = converse.env;
    const names = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k]));
    xt.api = api;
    xt.chatbox = (jid) => _converse.state.chatboxes?.get(jid);
    xt.Strophe = Strophe;
    api.listen.on('connfeedback', (fb) => {
      const s = { status: names[fb.get('connection_status')] ?? fb.get('connection_status'), message: fb.get('message') || '' };
      xt.status.push(s);
      console.info('xmppd-test: connection status ' + s.status + (s.message ? ' (' + s.message + ')' : ''));
    });
    api.listen.on('connected', () => { xt.connected = true; xt.jid = api.connection.get()?.jid; console.info('xmppd-test: connected as ' + xt.jid); });
    api.listen.on('reconnected', () => { xt.connected = true; console.info('xmppd-test: reconnected'); });
    api.listen.on('disconnected', () => { xt.connected = false; console.info('xmppd-test: disconnected'); });
    api.listen.on('message', (data) => {
      const a = data.attrs || {};
      xt.incoming.push({ from: a.from, body: a.body, type: a.type, is_error: !!a.is_error });
    });
  },
});
try {
  await converse.initialize({ ...cfg, whitelisted_plugins: ['xmppd-test'] });
  xt.initialized = true;
} catch (e) {
  xt.errors.push('initialize: ' + (e.stack || e));
}
`;

function pageHtml(settings) {
  const json = JSON.stringify(settings).replace(/</g, '\\u003c');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>xmppd Converse.js test</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script id="xt-config" type="application/json">${json}</script>
<script type="module">${PAGE_SCRIPT}</script>
</head><body class="converse-fullscreen"><div id="conversejs-bg"></div></body></html>`;
}

function startHttp(html) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': TYPES['.html'], 'cache-control': 'no-store' });
      res.end(html);
      return;
    }
    if (path.startsWith('/dist/')) {
      const file = normalize(join(DIST, path.slice('/dist/'.length)));
      if (file.startsWith(DIST + sep) && existsSync(file) && statSync(file).isFile()) {
        res.writeHead(200, { 'content-type': TYPES[extname(file)] || 'application/octet-stream' });
        createReadStream(file).pipe(res);
        return;
      }
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  return new Promise((resolveP, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolveP(server));
  });
}

// ---- the run -----------------------------------------------------------------

let context = null;
let httpServer = null;
let profileDir = null;
let finished = false;

async function cleanup() {
  const closing = [];
  if (context) {
    const c = context;
    context = null;
    closing.push(c.close().catch(() => {}));
  }
  if (httpServer) {
    const s = httpServer;
    httpServer = null;
    s.closeAllConnections?.();
    closing.push(new Promise((r) => s.close(() => r())));
  }
  // do not wait forever on a stuck browser: process exit kills it anyway
  await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 5000).unref())]);
  if (profileDir) {
    try { rmSync(profileDir, { recursive: true, force: true }); } catch { /* ignore */ }
    profileDir = null;
  }
}

async function finish(result) {
  if (finished) return;
  finished = true;
  const hard = setTimeout(() => {
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(result.ok ? 0 : 1);
  }, 10000);
  await cleanup();
  clearTimeout(hard);
  result.elapsed_s = Number(((Date.now() - t0) / 1000).toFixed(2));
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
}

function fail(error, extra = {}) {
  return finish({ ok: false, error: String(error), ...extra, log: logLines.slice(-LOG_TAIL) });
}

async function main() {
  let args;
  try {
    args = parseArgs();
  } catch (e) {
    return fail(e.message);
  }
  let stage = 'setup';
  const deadline = t0 + args.timeout_s * 1000;
  const left = () => Math.max(1, deadline - Date.now());
  const overall = setTimeout(() => fail(`timeout after ${args.timeout_s} s (stage: ${stage})`, { stage }), args.timeout_s * 1000);
  overall.unref();

  if (!existsSync(join(DIST, 'converse.min.js'))) {
    return fail(`${DIST}/converse.min.js missing: run npm ci in ${HERE} (scripts/install-tools.sh)`);
  }
  if (!existsSync(CHROMIUM)) {
    return fail(`${CHROMIUM} missing: install the Debian package chromium (scripts/install-tools.sh)`);
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    return fail(`playwright-core missing: run npm ci in ${HERE} (${e.message})`);
  }

  const settings = {
    view_mode: args.view_mode || 'fullscreen',
    jid: args.jid,
    password: args.password,
    auto_login: true,
    authentication: 'login',
    discover_connection_methods: false,
    loglevel: 'debug',
    blacklisted_plugins: ['converse-omemo', 'converse-omemo-views', 'converse-push', 'converse-notification'],
    persistent_store: 'localStorage',
    clear_cache_on_logout: true,
    auto_reconnect: false,
    allow_non_roster_messaging: true,
    play_sounds: false,
    show_desktop_notifications: false,
    disable_effects: true,
    i18n: 'en',
    show_controlbox_by_default: true,
  };
  if (args.transport === 'websocket') settings.websocket_url = args.url;
  else settings.bosh_service_url = args.url;

  httpServer = await startHttp(pageHtml(settings));
  const pageUrl = `http://127.0.0.1:${httpServer.address().port}/`;
  note(`page ${pageUrl}, ${args.transport} ${args.url} as ${args.jid}`);

  stage = 'launch';
  profileDir = mkdtempSync(join(tmpdir(), 'converse-chat-'));
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: args.headless !== false,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
    timeout: left(),
  });
  if (finished) return;
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => {
    const line = `[browser ${msg.type()}] ${msg.text()}`;
    process.stderr.write(line + '\n');
    remember(line);
  });
  page.on('pageerror', (err) => note(`page error: ${err.stack || err}`));
  page.on('requestfailed', (req) => {
    const why = req.failure()?.errorText || '';
    if (!finished && !why.includes('ERR_BLOCKED_BY_CLIENT')) note(`request failed: ${req.url()} ${why}`);
  });
  page.on('response', (res) => { if (res.status() >= 400) note(`HTTP ${res.status()} for ${res.url()}`); });
  // loopback only: Converse's login form links logos on conversejs.org
  await context.route((url) => !['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname), (route) => route.abort('blockedbyclient'));

  stage = 'load page';
  await page.goto(pageUrl, { timeout: left(), waitUntil: 'load' });

  stage = 'log in';
  note('waiting for login');
  const login = await page.waitForFunction(() => {
    const xt = window.__xt;
    if (!xt) return false;
    const bad = xt.status.find((s) => ['AUTHFAIL', 'CONNFAIL', 'ERROR', 'CONNTIMEOUT'].includes(s.status));
    if (bad) return { error: `connection ${bad.status}${bad.message ? ': ' + bad.message : ''}` };
    if (xt.connected && xt.api?.connection.connected()) return { jid: xt.jid };
    // other page errors are only logged: Converse throws some after a failure
    const init = xt.errors.filter((e) => e.startsWith('initialize:'));
    if (init.length) return { error: init.join('; ') };
    return false;
  }, null, { timeout: left(), polling: 100 }).then((h) => h.jsonValue());
  if (login.error) return fail(`login failed: ${login.error}`, { stage });
  note(`logged in as ${login.jid}`);

  stage = 'open chat';
  await page.evaluate(async (peer) => { await window.__xt.api.chats.open(peer, {}, true); }, args.peer);
  const chat = page.locator(`converse-chat[jid="${args.peer}"]`);
  const textarea = chat.locator('textarea.chat-textarea');
  await textarea.waitFor({ state: 'visible', timeout: left() });
  note(`chat with ${args.peer} open`);

  stage = 'send message';
  await textarea.click({ timeout: left() });
  await textarea.fill(args.message, { timeout: left() });
  await textarea.press('Enter', { timeout: left() });
  await chat.locator('.chat-msg__text', { hasText: args.message }).first().waitFor({ state: 'visible', timeout: left() });
  note('message sent and shown');

  stage = 'wait for reply';
  const reply = await page.waitForFunction(([peer, text]) => {
    const box = window.__xt.chatbox(peer);
    const bare = (j) => (j || '').split('/')[0];
    const m = box?.messages?.find((m) => m.get('sender') === 'them' && m.get('body') === text && bare(m.get('from')) === peer);
    return m ? { from: m.get('from'), body: m.get('body'), type: m.get('type'), msgid: m.get('msgid') || null } : false;
  }, [args.peer, args.expect_reply], { timeout: left(), polling: 100 }).then((h) => h.jsonValue());
  // and on screen, in the chat with the peer
  await chat.locator('.chat-msg__text', { hasText: args.expect_reply }).last().waitFor({ state: 'visible', timeout: left() });
  note(`reply from ${reply.from} shown`);

  stage = 'screenshot';
  let screenshot = null;
  if (args.screenshot) {
    screenshot = resolve(args.screenshot);
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.waitForTimeout(Math.min(300, left())); // let the last render settle
    await page.screenshot({ path: screenshot, fullPage: true, timeout: left() });
    note(`screenshot ${screenshot}`);
  }
  const incoming = await page.evaluate(() => window.__xt.incoming.slice(-20));

  // log out (closes the stream / terminates the BOSH session) so the server
  // does not keep a session for the closed browser; best effort, bounded
  stage = 'log out';
  const loggedOut = await page.evaluate(() => Promise.race([
    window.__xt.api.user.logout().then(() => true, () => false),
    new Promise((r) => setTimeout(() => r(false), 3000)),
  ])).catch(() => false);
  note(loggedOut ? 'logged out' : 'logout did not complete (ignored)');
  clearTimeout(overall);
  return finish({
    ok: true,
    transport: args.transport,
    url: args.url,
    jid: login.jid,
    peer: args.peer,
    sent: args.message,
    reply,
    incoming,
    screenshot,
    logged_out: loggedOut,
  });
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => fail(`killed by ${sig}`));
}

main().catch((e) => fail(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e));
