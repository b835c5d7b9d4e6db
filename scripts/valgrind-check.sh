#!/usr/bin/env bash
# Runs compassd under valgrind, serves non-streaming and streaming requests (in-process mock
# and the openai adapter against mockllm), a client that disconnects mid-stream and a reload,
# then stops it with SIGTERM. Fails on any leak or memory error valgrind reports.
# Usage: scripts/valgrind-check.sh BUILD_DIR
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
ml_pid=""; cd_pid=""
cleanup() {
  [ -n "$cd_pid" ] && kill -9 "$cd_pid" 2>/dev/null || true
  [ -n "$ml_pid" ] && kill "$ml_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_file() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }

"$build/tests/mockllm/mockllm" --port 0 --port-file "$tmp/ml.port" --quiet &
ml_pid=$!
wait_file "$tmp/ml.port"
ml=$(cat "$tmp/ml.port")
cat > "$tmp/c.conf" <<CONF
server = { listen = "127.0.0.1:0"; log_requests = true; };
plugins = { paths = [ "$root/$build/plugins" ]; };
deployments = (
  { name = "up"; plugin = "openai"; base_url = "http://127.0.0.1:$ml/v1"; models = ["gpt-v"]; },
  { name = "local"; plugin = "mock"; models = ["mock-1"]; options = { chunk_delay_ms = 20; }; }
);
routes = ( { name = "auto"; candidates = ["up/gpt-v", "local/mock-1"]; } );
CONF
valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
  --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --log-file="$tmp/vg.log" \
  "$build/compassd" --config "$tmp/c.conf" --port-file "$tmp/cd.port" 2>"$tmp/cd.log" &
cd_pid=$!
wait_file "$tmp/cd.port" || { cat "$tmp/cd.log"; exit 1; }
p=$(cat "$tmp/cd.port")
u="http://127.0.0.1:$p/v1/chat/completions"
req() { curl -s -m 20 -o /dev/null -w '%{http_code}' "$u" -H 'content-type: application/json' -d "$1"; }
fails=0
check() { if [ "$1" = "$2" ]; then echo "ok   $3"; else echo "FAIL $3 (got $1)"; fails=$((fails+1)); fi; }
check "$(req '{"model":"auto","messages":[{"role":"user","content":"hi"}]}')" 200 "non-stream via openai"
check "$(req '{"model":"auto","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}')" 200 "stream via openai"
check "$(req '{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}')" 200 "non-stream via mock"
check "$(req '{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"one two three"}]}')" 200 "stream via mock"
curl -s -XPOST "http://127.0.0.1:$ml/_mock/next" -d '{"status":500}' >/dev/null
check "$(req '{"model":"auto","messages":[{"role":"user","content":"failover"}]}')" 200 "failover"
check "$(req '{"model":"auto","messages":[')" 400 "malformed JSON"
# a client that leaves mid-stream
curl -s -XPOST "http://127.0.0.1:$ml/_mock/next" -d '{"chunks":50,"chunk_delay_ms":100}' >/dev/null
curl -s -m 1 -o /dev/null "$u" -d '{"model":"auto","stream":true,"messages":[{"role":"user","content":"long"}]}' || true
sleep 1
kill -HUP "$cd_pid"; sleep 1
check "$(req '{"model":"auto","messages":[{"role":"user","content":"after reload"}]}')" 200 "after reload"
kill -TERM "$cd_pid"
set +e; wait "$cd_pid"; rc=$?; set -e
cd_pid=""
check "$rc" 0 "compassd exit status under valgrind"
if [ -s "$tmp/vg.log" ]; then echo "valgrind reported:"; cat "$tmp/vg.log"; fails=$((fails+1)); fi
[ "$fails" -eq 0 ] && echo "valgrind: no leaks, no errors" || { echo "valgrind check: $fails failed"; exit 1; }
