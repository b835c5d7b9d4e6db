#!/usr/bin/env bash
# End-to-end tests of compassd with the official `openai` npm client.
#
#   bash tests/e2e/run.sh BUILD_DIR
#
# Starts one mockllm and one compassd (both on 127.0.0.1, free ports) with a generated config
# that has one deployment (and one route, "e2e-<deployment>") per provider adapter found in
# BUILD_DIR/plugins whose wire format mockllm speaks, then runs e2e.mjs (node:test) against it.
# Everything it starts is stopped on exit, with bounded waits.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:?usage: run.sh BUILD_DIR}
BUILD=$(cd "$BUILD" && pwd)
MOCKLLM=$BUILD/tests/mockllm/mockllm
COMPASSD=$BUILD/compassd
PLUGINS=$BUILD/plugins

log() { printf 'e2e: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ -x $MOCKLLM ]] || die "no mockllm at $MOCKLLM (build the tests/mockllm target)"
[[ -x $COMPASSD ]] || die "no compassd at $COMPASSD"
[[ -f $PLUGINS/openai.so ]] || die "no openai plugin at $PLUGINS/openai.so"

# --- node and the npm packages -------------------------------------------------------------
node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' 2>/dev/null
}
if ! node_ok; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "node >= 18 and npm not found: installing Debian's nodejs and npm"
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -q >&2 || true
        timeout 900 apt-get install -y -q --no-install-recommends nodejs npm >&2
    fi
    node_ok || die "node >= 18 and npm are required (apt-get install nodejs npm)"
fi

# The pinned packages go into the build tree, not the source tree (whose node_modules would
# hold a third-party client with real provider hosts in it): the test and its lock file are
# copied to BUILD/e2e-node, and npm ci runs there when node_modules is missing or older than
# the lock file.
NODE_DIR=$BUILD/e2e-node
mkdir -p "$NODE_DIR"
cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/e2e.mjs" "$NODE_DIR/"
if [[ ! -f $NODE_DIR/node_modules/openai/package.json ||
      $NODE_DIR/package-lock.json -nt $NODE_DIR/node_modules/.package-lock.json ]]; then
    log "npm ci in $NODE_DIR"
    (cd "$NODE_DIR" && timeout 600 npm ci --no-audit --no-fund --loglevel=error >&2) ||
        die "npm ci failed"
fi

# --- processes and cleanup -----------------------------------------------------------------
TMP=$(mktemp -d /tmp/compass-e2e.XXXXXX)
ML_PID=
CD_PID=
stop_pid() { # pid: SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop in 5 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
RC=1
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$CD_PID"
    stop_pid "$ML_PID"
    if [[ $RC != 0 || $rc != 0 ]]; then
        for f in "$TMP"/compassd.log "$TMP"/mockllm.log; do
            [[ -s $f ]] || continue
            log "---- last lines of $(basename "$f") ----"
            tail -n 40 "$f" >&2
        done
    fi
    rm -rf "$TMP"
    exit $((rc ? rc : RC))
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # pid port_file name -> prints the port
    local pid=$1 file=$2 name=$3 i port
    for ((i = 0; i < 150; i++)); do
        if [[ -s $file ]]; then
            port=$(tr -dc 0-9 <"$file")
            [[ -n $port && $port -gt 0 ]] && { echo "$port"; return 0; }
        fi
        kill -0 "$pid" 2>/dev/null || { log "$name exited before listening"; return 1; }
        sleep 0.1
    done
    log "$name did not write $file within 15 s"
    return 1
}

start_mockllm() { # sets ML_PID and ML
    "$MOCKLLM" --port 0 --port-file "$TMP/mockllm.port" --quiet >"$TMP/mockllm.log" 2>&1 &
    ML_PID=$!
    ML=http://127.0.0.1:$(wait_port "$ML_PID" "$TMP/mockllm.port" mockllm)
}

# --- which wire formats does this mockllm speak? -------------------------------------------
# probe KIND: exit 0 when mockllm answers a request in that provider's documented shape.
probe() {
    timeout 20 node --input-type=module - "$ML" "$1" <<'EOF'
const [base, kind] = process.argv.slice(2);
const user = [{ role: 'user', content: 'probe' }];
const reqs = {
  anthropic: ['/v1/messages',
    { 'x-api-key': 'probe', 'anthropic-version': '2023-06-01' },
    { model: 'claude-probe', max_tokens: 16, messages: user },
    (j) => j.type === 'message' && Array.isArray(j.content)],
  gemini: ['/v1beta/models/gemini-probe:generateContent',
    { 'x-goog-api-key': 'probe' },
    { contents: [{ role: 'user', parts: [{ text: 'probe' }] }] },
    (j) => Array.isArray(j.candidates) && j.candidates.length > 0],
  azure: ['/openai/deployments/probe/chat/completions?api-version=2024-10-21',
    { 'api-key': 'probe' },
    { messages: user },
    (j) => Array.isArray(j.choices) && j.choices.length > 0],
  replicate: ['/v1/models/probe/probe/predictions',
    { authorization: 'Bearer probe', prefer: 'wait' },
    { input: { prompt: 'probe' } },
    (j) => typeof j.id === 'string' && typeof j.status === 'string'],
};
const r = reqs[kind];
if (!r) process.exit(2);
try {
  const res = await fetch(base + r[0], {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...r[1] },
    body: JSON.stringify(r[2]),
    signal: AbortSignal.timeout(5000),
  });
  const j = await res.json().catch(() => null);
  process.exit(res.ok && j && r[3](j) ? 0 : 1);
} catch {
  process.exit(1);
}
EOF
}

# --- the configuration ---------------------------------------------------------------------
# deployment_block NAME: the libconfig text of that provider's deployment (one per provider).
# Keys are passed to compassd through COMPASS_E2E_<NAME>_KEY (dummy values; mockllm does not
# check them).
deployment_block() {
    case $1 in
    mock) printf '  { name = "mock"; plugin = "mock"; models = [ "mock-1" ]; }' ;;
    openai) printf '  { name = "openai"; plugin = "openai"; base_url = "%s/v1";
    api_key_env = "COMPASS_E2E_OPENAI_KEY"; models = [ "gpt-4o-mini" ]; }' "$ML" ;;
    anthropic) printf '  { name = "anthropic"; plugin = "anthropic"; base_url = "%s";
    api_key_env = "COMPASS_E2E_ANTHROPIC_KEY"; models = [ "claude-3-5-haiku-latest" ]; }' "$ML" ;;
    gemini) printf '  { name = "gemini"; plugin = "gemini"; base_url = "%s";
    api_key_env = "COMPASS_E2E_GEMINI_KEY"; models = [ "gemini-2.0-flash" ]; }' "$ML" ;;
    azure) printf '  { name = "azure"; plugin = "azure"; base_url = "%s";
    api_key_env = "COMPASS_E2E_AZURE_KEY"; models = [ "gpt-4o-mini" ]; }' "$ML" ;;
    replicate) printf '  { name = "replicate"; plugin = "replicate"; base_url = "%s";
    api_key_env = "COMPASS_E2E_REPLICATE_KEY"; models = [ "meta/meta-llama-3-8b-instruct" ]; }' "$ML" ;;
    *) return 1 ;;
    esac
}
write_conf() { # file deployment... : writes a config with those deployments and their routes
    local file=$1 d sep=''
    shift
    {
        printf 'server = { listen = "127.0.0.1:0"; threads = 1; drain_seconds = 2;\n'
        printf '  timeouts = { connect_ms = 2000; first_byte_ms = 10000; idle_ms = 10000; total_ms = 30000; };\n'
        # the tests inject upstream failures on purpose: keep the breaker from opening on them
        printf '  breaker = { enabled = false; };\n};\n'
        printf 'plugins = { paths = [ "%s" ]; };\n' "$PLUGINS"
        printf 'deployments = (\n'
        for d in "$@"; do
            printf '%s' "$sep"
            deployment_block "$d"
            sep=$',\n'
        done
        printf '\n);\nroutes = (\n'
        sep=''
        for d in "$@"; do
            printf '%s  { name = "e2e-%s"; candidates = [ "%s/%s" ]; }' "$sep" "$d" "$d" "$(model_of "$d")"
            sep=$',\n'
        done
        printf '\n);\n'
    } >"$file"
}
model_of() { deployment_block "$1" | sed -n 's/.*models = \[ "\([^"]*\)".*/\1/p'; }

export COMPASS_E2E_OPENAI_KEY=sk-e2e-dummy COMPASS_E2E_ANTHROPIC_KEY=sk-ant-e2e-dummy \
    COMPASS_E2E_GEMINI_KEY=gm-e2e-dummy COMPASS_E2E_AZURE_KEY=az-e2e-dummy \
    COMPASS_E2E_REPLICATE_KEY=r8-e2e-dummy

# Probe with a throwaway mockllm, so a probe that upsets a half-finished wire format cannot
# affect the instance the tests use.
start_mockllm
PROBED=()
for p in anthropic gemini azure replicate; do
    if [[ -f $PLUGINS/$p.so ]] && probe "$p"; then PROBED+=("$p"); fi
done
if ! kill -0 "$ML_PID" 2>/dev/null; then
    log "mockllm died while being probed (formats probed so far: ${PROBED[*]}); its output:"
    cat "$TMP/mockllm.log" >&2 || true
fi
stop_pid "$ML_PID"
rm -f "$TMP/mockllm.port"

start_mockllm
log "mockllm on $ML"

# Provider adapters in this build: <name>.so with a build folder under plugins/providers.
PROVIDERS=()
for so in "$PLUGINS"/*.so; do
    name=$(basename "$so" .so)
    [[ -d $PLUGINS/providers/$name ]] && PROVIDERS+=("$name")
done
log "provider plugins in $PLUGINS: ${PROVIDERS[*]}"

DEPLOY=()
for p in mock openai anthropic gemini azure replicate; do
    [[ " ${PROVIDERS[*]} " == *" $p "* ]] || continue
    case $p in
    mock | openai) DEPLOY+=("$p"); continue ;;
    esac
    if [[ " ${PROBED[*]} " != *" $p "* ]]; then
        log "skipping $p: mockllm does not speak its wire format (yet)"
        continue
    fi
    # The deployment block is a best guess for plugins that landed after this script: let
    # compassd --check-config judge it, and say why when it is refused.
    write_conf "$TMP/check.conf" "$p"
    if ! out=$("$COMPASSD" --check-config "$TMP/check.conf" 2>&1); then
        log "skipping $p: compassd --check-config refused its deployment: $out"
        continue
    fi
    DEPLOY+=("$p")
done
for p in "${PROVIDERS[@]}"; do
    deployment_block "$p" >/dev/null || log "no e2e deployment for provider plugin '$p' (unknown to run.sh)"
done

CONF=$TMP/compassd.conf
write_conf "$CONF" "${DEPLOY[@]}"
"$COMPASSD" --check-config "$CONF" >"$TMP/check.log" 2>&1 || { cat "$TMP/check.log" "$CONF" >&2; die "generated config refused"; }

"$COMPASSD" --config "$CONF" --listen 127.0.0.1:0 --port-file "$TMP/compassd.port" \
    >"$TMP/compassd.log" 2>&1 &
CD_PID=$!
CD_PORT=$(wait_port "$CD_PID" "$TMP/compassd.port" compassd)
log "compassd on 127.0.0.1:$CD_PORT with deployments: ${DEPLOY[*]}"

MODELS=()
for d in "${DEPLOY[@]}"; do MODELS+=("e2e-$d"); done

# --- the tests -----------------------------------------------------------------------------
set +e
# Run directly (node --test would not pass arguments); the spec reporter prints the summary.
(cd "$NODE_DIR" && COMPASS_E2E_MOCKLLM=$ML timeout -k 5 240 node --test-reporter=spec e2e.mjs \
    "http://127.0.0.1:$CD_PORT" "${MODELS[@]}")
RC=$?
set -e
[[ $RC == 0 ]] || log "node --test exited $RC"
exit $RC
