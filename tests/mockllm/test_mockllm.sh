#!/usr/bin/env bash
# Self-test for mockllm: usage test_mockllm.sh /path/to/mockllm [/path/to/mockllm_streams]
# (without the C load client, a slower python asyncio client is used for the stream load)
# Starts mockllm on a free port and checks the OpenAI wire format and the knobs.
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -u
BIN=${1:?usage: test_mockllm.sh /path/to/mockllm [/path/to/mockllm_streams]}
CLIENT=${2:-}
HERE=$(cd "$(dirname "$0")" && pwd)
STREAMS=${MOCKLLM_TEST_STREAMS:-2000}
TMP=$(mktemp -d)
PASS=0
FAIL=0
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    [ -n "${MOCKLLM_KEEP_TMP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1${2:+: $2}"; }
check() { # name, command...
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$out"; fi
}
# pyjson FILE 'python expression over d' : exit 0 iff the expression is true
pyjson() {
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
ok=eval("(" + sys.argv[2] + ")")
if not ok: print(json.dumps(d)[:600])
sys.exit(0 if ok else 1)' "$1" "$2"
}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$BIN" --port 0 --port-file "$TMP/port" --threads 2 >"$TMP/out" 2>"$TMP/err" &
PID=$!
for _ in $(seq 1 100); do [ -s "$TMP/port" ] && break; sleep 0.05; done
PORT=$(cat "$TMP/port" 2>/dev/null)
if [ -z "$PORT" ]; then
    echo "mockllm did not start: $(cat "$TMP/err")"
    echo "0 passed, 1 failed"
    exit 1
fi
U=http://127.0.0.1:$PORT
check "prints the listening line" grep -qx "mockllm listening on 127.0.0.1:$PORT" "$TMP/out"

chat() { # body [curl args...] -> $TMP/body, $TMP/hdr, echo status
    local body=$1; shift
    curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
        "$@" "$U/v1/chat/completions" -d "$body"
}
MSG='{"model":"gpt-4o","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}]}'

# --- non-streaming shape
s=$(chat "$MSG")
check "non-stream status 200" test "$s" = 200
check "non-stream chat.completion shape" pyjson "$TMP/body" '
d["object"]=="chat.completion" and d["id"].startswith("chatcmpl-mock-") and d["model"]=="gpt-4o"
and isinstance(d["created"],int) and d["system_fingerprint"]
and d["choices"][0]["message"]=={"role":"assistant","content":"mock reply to: hello there world","refusal":None,"annotations":[]}
and d["choices"][0]["finish_reason"]=="stop"
and d["usage"]["prompt_tokens"]==7 and d["usage"]["completion_tokens"]==6 and d["usage"]["total_tokens"]==13'

s=$(chat '{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"a b c"}]}')
check "max_tokens cuts and finish_reason length" pyjson "$TMP/body" '
d["choices"][0]["message"]["content"]=="mock reply" and d["choices"][0]["finish_reason"]=="length"
and d["usage"]["completion_tokens"]==2'

s=$(chat '{"model":"m","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],"tool_choice":"required","messages":[{"role":"user","content":"hi"}]}')
check "tool_choice required gives a tool call" pyjson "$TMP/body" '
d["choices"][0]["finish_reason"]=="tool_calls" and d["choices"][0]["message"]["content"] is None
and d["choices"][0]["message"]["tool_calls"][0]=={"id":"call_mock_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"value\"}"}}'

# --- validation
s=$(chat 'not json')
check "bad JSON gives 400" test "$s" = 400
check "bad JSON error body" pyjson "$TMP/body" 'd["error"]["type"]=="invalid_request_error" and d["error"]["message"].startswith("We could not parse the JSON body")'
s=$(chat '{"messages":[{"role":"user","content":"x"}]}')
check "missing model gives 400 param model" pyjson "$TMP/body" 'd["error"]["param"]=="model"'
s=$(chat '{"model":"m","messages":[]}')
check "empty messages gives 400 param messages" sh -c "test $s = 400 && grep -q '\"param\":\"messages\"' $TMP/body"
s=$(chat '{"model":"m","messages":[{"role":"wizard","content":"x"}]}')
check "bad role names messages[0].role" pyjson "$TMP/body" 'd["error"]["param"]=="messages[0].role" and d["error"]["code"]=="invalid_value"'
s=$(chat '{"model":"does-not-exist","messages":[{"role":"user","content":"x"}]}')
check "does-not-exist gives 404 model_not_found" sh -c "test $s = 404 && grep -q model_not_found $TMP/body"

# --- streaming
s=$(chat '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}')
check "stream content type" grep -qi '^content-type: text/event-stream' "$TMP/hdr"
python3 - "$TMP/body" >"$TMP/sse" 2>&1 <<'EOF'
import json, sys
raw = open(sys.argv[1]).read()
events = [e for e in raw.split("\n\n") if e.strip()]
assert all(e.startswith("data: ") for e in events), events
assert events[-1] == "data: [DONE]", events[-1]
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert all(c["object"] == "chat.completion.chunk" for c in chunks)
assert all("usage" in c for c in chunks), "include_usage: every chunk carries usage"
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
assert chunks[0]["choices"][0]["delta"]["content"] == ""
text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
assert text == "mock reply to: hello there", text
assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5, chunks[-1]
assert all(c["usage"] is None for c in chunks[:-1])
print("ok")
EOF
check "stream chunks, usage chunk and [DONE]" grep -qx ok "$TMP/sse"

# --- knobs
s=$(chat '{"model":"m","messages":[{"role":"user","content":"retry please #mock{\"status\":429,\"retry_after\":2}"}]}')
check "#mock status 429" test "$s" = 429
check "#mock retry_after header" grep -qi '^retry-after: 2' "$TMP/hdr"
check "429 error body" pyjson "$TMP/body" 'd["error"]["code"]=="rate_limit_exceeded" and "param" in d["error"]'

s=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}' -H 'x-mock-status: 503' -H 'x-mock-error-message: boom')
check "x-mock-status header" sh -c "test $s = 503 && grep -q boom $TMP/body"

curl -s "$U/_mock/next" -d '[{"status":500},{"content":"from the queue"}]' >/dev/null
s1=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}')
s2=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}')
check "queued knobs consumed FIFO" sh -c "test $s1 = 500 && test $s2 = 200 && grep -q 'from the queue' $TMP/body"

curl -s "$U/_mock/next" -d '{"status":500}' >/dev/null
curl -s -X DELETE "$U/_mock/next" >/dev/null
s=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}')
check "DELETE /_mock/next clears the queue" test "$s" = 200

t0=$(date +%s%N)
s=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}' -H 'x-mock-latency-ms: 300')
t1=$(date +%s%N)
check "latency_ms delays the answer" test $(((t1 - t0) / 1000000)) -ge 290

s=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}' -H 'x-mock-body: <html>502</html>')
check "body knob sends raw body" sh -c "test $s = 200 && grep -q '<html>502</html>' $TMP/body"
s=$(chat '{"model":"m","messages":[{"role":"user","content":"x"}]}' -H 'x-mock-malformed: true')
check "malformed knob sends invalid JSON" sh -c "test $s = 200 && ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' $TMP/body 2>/dev/null"
curl -s -o /dev/null -H 'x-mock-truncate: true' "$U/v1/chat/completions" \
    -d '{"model":"m","messages":[{"role":"user","content":"x"}]}'
rc=$?
check "truncate knob: short body then close (curl 18)" test "$rc" = 18

SMSG='{"model":"m","stream":true,"messages":[{"role":"user","content":"one two three four five"}]}'
curl -s -o "$TMP/body" -H 'x-mock-drop-after: 3' "$U/v1/chat/completions" -d "$SMSG"
rc=$?
check "drop_after closes early without [DONE]" sh -c "test $rc -ne 0 && test \$(grep -c '^data: ' $TMP/body) = 3 && ! grep -q DONE $TMP/body"
curl -s -o "$TMP/body" -H 'x-mock-error-event-after: 2' "$U/v1/chat/completions" -d "$SMSG"
check "error_event_after sends an SSE error" sh -c "test \$(grep -c '^data: ' $TMP/body) = 3 && grep -q '^data: {\"error\"' $TMP/body && ! grep -q DONE $TMP/body"
curl -s -o "$TMP/body" -H 'x-mock-garbage-after: 1' "$U/v1/chat/completions" -d "$SMSG"
check "garbage_after injects bad data and continues" sh -c "grep -q '^data: {not json' $TMP/body && grep -q DONE $TMP/body"
curl -s -o "$TMP/body" -H 'x-mock-chunks: 2' "$U/v1/chat/completions" -d "$SMSG"
check "chunks N splits the content in N" test "$(grep -c '"content":"[^"]' "$TMP/body")" = 2

# --- hang: client gives up, in_flight goes back to 0
curl -s -X POST "$U/_mock/reset" >/dev/null
curl -s -m 1 -o /dev/null -H 'x-mock-hang: true' "$U/v1/chat/completions" -d "$SMSG"
rc=$?
check "hang: client times out" test "$rc" = 28
curl -s "$U/_mock/stats" >"$TMP/stats"
n=0
until pyjson "$TMP/stats" 'd["in_flight"]==0' >/dev/null || [ $n -ge 20 ]; do
    sleep 0.1; n=$((n + 1)); curl -s "$U/_mock/stats" >"$TMP/stats"
done
check "hang: in_flight back to 0 after the client left" pyjson "$TMP/stats" 'd["in_flight"]==0 and d["requests"]==1'

# --- stream abort by the client counts as streams_aborted
curl -s -X POST "$U/_mock/reset" >/dev/null
curl -s -m 0.5 -o /dev/null -H 'x-mock-chunk-delay-ms: 200' "$U/v1/chat/completions" -d "$SMSG"
sleep 0.5
curl -s "$U/_mock/stats" >"$TMP/stats"
check "client abort counts in streams_aborted" pyjson "$TMP/stats" 'd["streams_aborted"]==1 and d["in_flight"]==0 and d["streams_started"]==1'

# --- stats and last_request
curl -s -X POST "$U/_mock/reset" >/dev/null
chat '{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}' -H 'Authorization: Bearer sk-secret' -H 'X-Trace: abc' >/dev/null
curl -s "$U/_mock/stats" >"$TMP/stats"
check "stats last_request" pyjson "$TMP/stats" '
d["requests"]==1 and d["chat"]==1 and d["last_request"]["path"]=="/v1/chat/completions"
and d["last_request"]["headers"]["authorization"]=="present" and d["last_request"]["headers"]["x-trace"]=="abc"
and d["last_request"]["body"]["model"]=="gpt-4o" and "sk-secret" not in json.dumps(d)'

# --- models, embeddings
curl -s "$U/v1/models" >"$TMP/body"
check "GET /v1/models" pyjson "$TMP/body" 'd["object"]=="list" and len(d["data"])>0 and d["data"][0]["object"]=="model"'
curl -s "$U/v1/embeddings" -d '{"model":"text-embedding-3-small","input":["a","b"]}' >"$TMP/body"
curl -s "$U/v1/embeddings" -d '{"model":"text-embedding-3-small","input":"a"}' >"$TMP/body2"
check "POST /v1/embeddings deterministic" python3 -c 'import json,sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2]))
assert a["object"]=="list" and len(a["data"])==2 and len(a["data"][0]["embedding"])==8
assert a["data"][0]["embedding"]==b["data"][0]["embedding"] != a["data"][1]["embedding"]' "$TMP/body" "$TMP/body2"

# --- concurrency: N slow streams at once (10 chunks/s each), thread count constant
before=$(awk '/^Threads:/{print $2}' /proc/$PID/status)
curl -s -X POST "$U/_mock/reset" >/dev/null
if [ -n "$CLIENT" ] && [ -x "$CLIENT" ]; then
    "$CLIENT" "$PORT" "$PID" "$STREAMS" 100 20 30 >"$TMP/conc" 2>"$TMP/conc.err"
    check "$STREAMS concurrent slow streams all complete" pyjson "$TMP/conc" "d['ok']==$STREAMS"
    check "all $STREAMS streams were open at once" pyjson "$TMP/conc" "d['max_open']==$STREAMS"
    check "thread count constant under load ($before)" pyjson "$TMP/conc" "d['threads_min']==d['threads_max']==$before"
else
    python3 "$HERE/concurrent_streams.py" "$PORT" "$PID" "$STREAMS" 100 30 >"$TMP/conc" 2>"$TMP/conc.err"
    check "$STREAMS concurrent slow streams all complete" pyjson "$TMP/conc" "d['ok']==$STREAMS"
    check "thread count constant under load ($before)" pyjson "$TMP/conc" "d['threads']==[$before]"
fi
curl -s "$U/_mock/stats" >"$TMP/stats"
check "stats count the concurrent streams" pyjson "$TMP/stats" "d['streams_completed']==$STREAMS and d['in_flight']==0"
echo "  $(cat "$TMP/conc")"

# --- require-key, on a second instance
"$BIN" --port 0 --port-file "$TMP/port2" --require-key sk-test --quiet >/dev/null 2>&1 &
PID2=$!
for _ in $(seq 1 100); do [ -s "$TMP/port2" ] && break; sleep 0.05; done
U2=http://127.0.0.1:$(cat "$TMP/port2")
s=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U2/v1/chat/completions" -d '{"model":"m","messages":[{"role":"user","content":"x"}]}')
check "--require-key: no key gives 401 invalid_api_key" sh -c "test $s = 401 && grep -q invalid_api_key $TMP/body"
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'Authorization: Bearer sk-test' "$U2/v1/chat/completions" -d '{"model":"m","messages":[{"role":"user","content":"x"}]}')
check "--require-key: right key gives 200" test "$s" = 200
kill -TERM $PID2
wait $PID2
check "SIGTERM stops cleanly (exit 0)" test $? = 0

# --- clean stop while a request hangs
curl -s -o /dev/null -H 'x-mock-hang: true' "$U/v1/chat/completions" -d "$SMSG" &
CURL=$!
sleep 0.3
kill -TERM "$PID"
wait "$PID"
rc=$?
PID=
wait $CURL 2>/dev/null
check "SIGTERM with a hung request stops cleanly (exit 0)" test "$rc" = 0
if grep -qiE 'ERROR: AddressSanitizer|runtime error' "$TMP/err"; then
    bad "sanitizers clean" "$(head -20 "$TMP/err")"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
