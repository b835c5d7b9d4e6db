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

# --- Anthropic Messages (anthropic.c)
amsg() { # body [curl args...] -> $TMP/body, $TMP/hdr, echo status
    local body=$1; shift
    curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
        -H 'x-api-key: sk-ant-test' -H 'anthropic-version: 2023-06-01' "$@" "$U/v1/messages" -d "$body"
}
s=$(amsg '{"model":"claude-x","max_tokens":100,"system":"be brief","messages":[{"role":"user","content":"hello there world"}]}')
check "anthropic: message shape" pyjson "$TMP/body" '
d["type"]=="message" and d["id"].startswith("msg_") and d["role"]=="assistant" and d["model"]=="claude-x"
and d["content"]==[{"type":"text","text":"mock reply to: hello there world"}]
and d["stop_reason"]=="end_turn" and d["stop_sequence"] is None
and d["usage"]["input_tokens"]==7 and d["usage"]["output_tokens"]==6'
s=$(amsg '{"model":"c","max_tokens":2,"messages":[{"role":"user","content":"a b c"}]}')
check "anthropic: max_tokens cuts, stop_reason max_tokens" pyjson "$TMP/body" '
d["content"][0]["text"]=="mock reply" and d["stop_reason"]=="max_tokens" and d["usage"]["output_tokens"]==2'
s=$(amsg '{"model":"c","max_tokens":50,"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],"tool_choice":{"type":"any"},"messages":[{"role":"user","content":"hi"}]}')
check "anthropic: tool_choice any gives tool_use" pyjson "$TMP/body" '
d["stop_reason"]=="tool_use" and d["content"][0]["type"]=="tool_use" and d["content"][0]["name"]=="get_weather"
and d["content"][0]["input"]=={"city":"value"} and d["content"][0]["id"].startswith("toolu_")'
arej() { # name body needle [curl args...]
    local name=$1 body=$2 needle=$3; shift 3
    local st; st=$(amsg "$body" "$@")
    check "anthropic rejects: $name" pyjson "$TMP/body" "$st==400 and d['type']=='error' and d['error']['type']=='invalid_request_error' and $needle in d['error']['message']"
}
arej "missing max_tokens" '{"model":"c","messages":[{"role":"user","content":"x"}]}' '"max_tokens"'
arej "system role in messages" '{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}]}' '"system"'
arej "non-alternating turns" '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"user","content":"y"}]}' '"alternate"'
arej "first turn not user" '{"model":"c","max_tokens":5,"messages":[{"role":"assistant","content":"x"},{"role":"user","content":"y"}]}' '"first message"'
arej "empty messages" '{"model":"c","max_tokens":5,"messages":[]}' '"at least one message"'
arej "temperature above 1" '{"model":"c","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]}' '"temperature"'
arej "image with an unsupported media_type" '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/bmp","data":"AAAA"}}]}]}' '"media_type"'
arej "tool_result without tool_use" '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_x","content":"r"}]}]}' '"tool_use_id"'
s=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U/v1/messages" -H 'x-api-key: k' -d '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}')
check "anthropic: missing anthropic-version gives 400" pyjson "$TMP/body" "$s==400 and 'anthropic-version' in d['error']['message']"
s=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U/v1/messages" -H 'anthropic-version: 2023-06-01' -d '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}')
check "anthropic: missing x-api-key gives 401 authentication_error" pyjson "$TMP/body" "$s==401 and d['error']['type']=='authentication_error'"
s=$(amsg '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}' -H 'x-mock-status: 529')
check "anthropic: status 529 gives overloaded_error" pyjson "$TMP/body" "$s==529 and d=={'type':'error','error':{'type':'overloaded_error','message':'Overloaded'},'request_id':d['request_id']}"
s=$(amsg '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}' -H 'x-mock-status: 429' -H 'x-mock-retry-after: 3')
check "anthropic: status 429 gives rate_limit_error with retry-after" sh -c "test $s = 429 && grep -q rate_limit_error $TMP/body && grep -qi '^retry-after: 3' $TMP/hdr"
ASSE='import json, sys
raw = open(sys.argv[1]).read()
evs = [e for e in raw.split("\n\n") if e.strip()]
out = []
for e in evs:
    lines = e.split("\n")
    assert lines[0].startswith("event: ") and lines[1].startswith("data: "), e
    name = lines[0][7:]; d = json.loads(lines[1][6:])
    assert d["type"] == name, (name, d)
    out.append((name, d))
print(json.dumps(out))'
amsg '{"model":"c","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello there"}]}' >/dev/null
python3 -c "$ASSE" "$TMP/body" >"$TMP/ev" 2>&1
check "anthropic stream: documented event sequence" pyjson "$TMP/ev" '
[n for n,_ in d]==["message_start","content_block_start","ping"]+["content_block_delta"]*5+["content_block_stop","message_delta","message_stop"]
and d[0][1]["message"]["content"]==[] and d[0][1]["message"]["stop_reason"] is None
and d[1][1]=={"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}
and "".join(e["delta"]["text"] for n,e in d if n=="content_block_delta")=="mock reply to: hello there"
and d[-2][1]["delta"]["stop_reason"]=="end_turn" and d[-2][1]["usage"]["output_tokens"]==5'
grep -qi '^content-type: text/event-stream' "$TMP/hdr" && ok "anthropic stream: content type" || bad "anthropic stream: content type"
amsg '{"model":"c","max_tokens":100,"stream":true,"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],"tool_choice":{"type":"tool","name":"get_weather"},"messages":[{"role":"user","content":"hi"}]}' >/dev/null
python3 -c "$ASSE" "$TMP/body" >"$TMP/ev" 2>&1
check "anthropic stream: tool_use input in several input_json_delta fragments" pyjson "$TMP/ev" '
d[1][1]["content_block"]["type"]=="tool_use" and d[1][1]["content_block"]["input"]=={}
and len([e for n,e in d if n=="content_block_delta"])>1
and all(e["delta"]["type"]=="input_json_delta" for n,e in d if n=="content_block_delta")
and json.loads("".join(e["delta"]["partial_json"] for n,e in d if n=="content_block_delta"))=={"city":"value"}
and d[-2][1]["delta"]["stop_reason"]=="tool_use"'
amsg '{"model":"c","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"a b c d"}]}' -H 'x-mock-error-event-after: 4' >/dev/null
check "anthropic stream: error_event_after sends event: error" sh -c "test \$(grep -c '^event: ' $TMP/body) = 5 && tail -n 3 $TMP/body | grep -q '^event: error' && grep -q '\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"' $TMP/body && ! grep -q message_stop $TMP/body"
amsg '{"model":"c","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"a b"}]}' -H 'x-mock-unknown-event: 1' >/dev/null
check "anthropic stream: unknown_event inserts an unknown event type" sh -c "sed -n 4p $TMP/body | grep -q '^event: mock_future_event' && grep -q message_stop $TMP/body"

# --- Gemini (gemini.c)
gem() { # path-suffix body [curl args...]
    local sfx=$1 body=$2; shift 2
    curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -H 'Content-Type: application/json' \
        "$@" "$U/v1beta/models/gemini-x:$sfx" -d "$body"
}
GK='x-goog-api-key: gk-test'
s=$(gem generateContent '{"systemInstruction":{"parts":[{"text":"be brief"}]},"contents":[{"role":"user","parts":[{"text":"hello there world"}]}]}' -H "$GK")
check "gemini: GenerateContentResponse shape" pyjson "$TMP/body" '
d["candidates"][0]["content"]=={"parts":[{"text":"mock reply to: hello there world"}],"role":"model"}
and d["candidates"][0]["finishReason"]=="STOP" and d["modelVersion"]=="gemini-x" and d["responseId"]
and d["usageMetadata"]["promptTokenCount"]==7 and d["usageMetadata"]["candidatesTokenCount"]==6 and d["usageMetadata"]["totalTokenCount"]==13'
s=$(gem generateContent '{"contents":[{"role":"user","parts":[{"text":"a b c"}]}],"generationConfig":{"maxOutputTokens":2}}' -H "x-goog-api-key: k")
check "gemini: maxOutputTokens cuts, finishReason MAX_TOKENS" pyjson "$TMP/body" '
d["candidates"][0]["content"]["parts"][0]["text"]=="mock reply" and d["candidates"][0]["finishReason"]=="MAX_TOKENS"'
s=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U/v1beta/models/gemini-x:generateContent?key=k" -d '{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY"}}}')
check "gemini: mode ANY gives a functionCall (key query param)" pyjson "$TMP/body" '
d["candidates"][0]["content"]["parts"]==[{"functionCall":{"name":"get_weather","args":{"city":"value"}}}]'
grej() { # name body needle
    local st; st=$(gem generateContent "$2" -H "$GK")
    check "gemini rejects: $1" pyjson "$TMP/body" "$st==400 and d['error']['code']==400 and d['error']['status']=='INVALID_ARGUMENT' and $3 in d['error']['message']"
}
grej "role assistant" '{"contents":[{"role":"user","parts":[{"text":"x"}]},{"role":"assistant","parts":[{"text":"y"}]}]}' '"valid role"'
grej "empty contents" '{"contents":[]}' '"contents"'
grej "missing parts" '{"contents":[{"role":"user"}]}' '"parts"'
grej "unknown field" '{"contents":[{"role":"user","parts":[{"text":"x"}]}],"max_tokens":5}' '"max_tokens"'
grej "JSON Schema keyword in function parameters" '{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f","parameters":{"type":"object","additionalProperties":false}}]}]}' '"additionalProperties"'
grej "function responses not matching the calls" '{"contents":[{"role":"user","parts":[{"text":"x"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}},{"functionCall":{"name":"f","args":{}}}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{}}}]}]}' '"number of function response parts"'
FC3='{"contents":[{"role":"user","parts":[{"text":"x"}]},{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}SIG}]},{"role":"user","parts":[{"functionResponse":{"name":"f","response":{}}}]}]}'
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "$GK" "$U/v1beta/models/gemini-3-pro-preview:generateContent" -d "${FC3/SIG/}")
check "gemini rejects: gemini-3 function call without thoughtSignature" pyjson "$TMP/body" "$s==400 and 'thought_signature' in d['error']['message']"
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H "$GK" "$U/v1beta/models/gemini-3-pro-preview:generateContent" -d "${FC3/SIG/,\"thoughtSignature\":\"skip_thought_signature_validator\"}")
check "gemini: gemini-3 function call with thoughtSignature accepted" test "$s" = 200
s=$(gem generateContent '{"contents":[{"role":"user","parts":[{"text":"x"}]}]}')
check "gemini: no key gives 403 PERMISSION_DENIED" pyjson "$TMP/body" "$s==403 and d['error']['status']=='PERMISSION_DENIED'"
s=$(gem generateContent '{"contents":[{"role":"user","parts":[{"text":"x"}]}]}' -H "$GK" -H 'x-mock-status: 503')
check "gemini: status 503 gives UNAVAILABLE" pyjson "$TMP/body" "$s==503 and d['error']=={'code':503,'message':d['error']['message'],'status':'UNAVAILABLE'}"
s=$(gem generateContent '{"contents":[{"role":"user","parts":[{"text":"x"}]}]}' -H "$GK" -H 'x-mock-status: 429')
check "gemini: status 429 gives RESOURCE_EXHAUSTED" pyjson "$TMP/body" "$s==429 and d['error']['status']=='RESOURCE_EXHAUSTED'"
GSSE='import json, sys
raw = open(sys.argv[1]).read()
evs = [e for e in raw.split("\n\n") if e.strip()]
assert all(e.startswith("data: ") for e in evs), evs
print(json.dumps([json.loads(e[6:]) for e in evs]))'
gem 'streamGenerateContent?alt=sse' '{"contents":[{"role":"user","parts":[{"text":"hello there"}]}]}' -H "$GK" >/dev/null
python3 -c "$GSSE" "$TMP/body" >"$TMP/ev" 2>&1
check "gemini stream (alt=sse): text over several events, last with finishReason and usage" pyjson "$TMP/ev" '
len(d)==5 and "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in d)=="mock reply to: hello there"
and all("finishReason" not in e["candidates"][0] for e in d[:-1]) and d[-1]["candidates"][0]["finishReason"]=="STOP"
and d[-1]["usageMetadata"]["candidatesTokenCount"]==5 and all(e["candidates"][0]["content"]["role"]=="model" for e in d)'
check "gemini stream: no [DONE]" sh -c "! grep -q DONE $TMP/body && grep -qi '^content-type: text/event-stream' $TMP/hdr"
gem streamGenerateContent '{"contents":[{"role":"user","parts":[{"text":"hello there"}]}]}' -H "$GK" >/dev/null
check "gemini stream without alt=sse: one JSON array" pyjson "$TMP/body" 'isinstance(d,list) and len(d)==5'
gem 'streamGenerateContent?alt=sse' '{"contents":[{"role":"user","parts":[{"text":"a b c"}]}]}' -H "$GK" -H 'x-mock-error-event-after: 2' >/dev/null
python3 -c "$GSSE" "$TMP/body" >"$TMP/ev" 2>&1
check "gemini stream: error_event_after sends {\"error\":{...}}" pyjson "$TMP/ev" 'len(d)==3 and d[2]["error"]["status"]=="INTERNAL" and d[2]["error"]["code"]==500'

# batchEmbedContents: deterministic vectors per text, outputDimensionality, Google's errors
ER='{"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]}},{"model":"models/gemini-x","content":{"parts":[{"text":"b"}]}}]}'
s=$(gem batchEmbedContents "$ER" -H "$GK"); cp "$TMP/body" "$TMP/gemb"
gem batchEmbedContents '{"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]}}]}' -H "$GK" >/dev/null
curl -s "$U/v1/embeddings" -d '{"model":"text-embedding-3-small","input":"a"}' >"$TMP/oemb"
check "gemini: batchEmbedContents deterministic, 8 values, one per request" python3 -c 'import json,sys
a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); o=json.load(open(sys.argv[3]))
assert sys.argv[4]=="200" and list(a)==["embeddings"] and len(a["embeddings"])==2, a
e0=a["embeddings"][0]["values"]; e1=a["embeddings"][1]["values"]
assert list(a["embeddings"][0])==["values"] and len(e0)==len(e1)==8 and e0!=e1
assert b["embeddings"][0]["values"]==e0 and o["data"][0]["embedding"]==e0
assert abs(sum(x*x for x in e0)-1)<1e-4' "$TMP/gemb" "$TMP/body" "$TMP/oemb" "$s"
s=$(gem batchEmbedContents '{"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]},"outputDimensionality":3},{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]},"output_dimensionality":20}]}' -H "$GK")
check "gemini: batchEmbedContents honours outputDimensionality" pyjson "$TMP/body" "$s==200 and [len(e['values']) for e in d['embeddings']]==[3,20] and abs(sum(x*x for x in d['embeddings'][1]['values'])-1)<1e-4"
gerej() { # name body needle
    local st; st=$(gem batchEmbedContents "$2" -H "$GK")
    check "gemini batchEmbedContents rejects: $1" pyjson "$TMP/body" "$st==400 and d['error']['code']==400 and d['error']['status']=='INVALID_ARGUMENT' and $3 in d['error']['message']"
}
gerej "no requests" '{}' '"requests"'
gerej "empty requests" '{"requests":[]}' '"requests"'
gerej "unknown field" '{"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]},"dimensions":4}]}' '"dimensions"'
gerej "a model other than the URL's" '{"requests":[{"model":"models/other","content":{"parts":[{"text":"a"}]}}]}' '"model"'
gerej "no content" '{"requests":[{"model":"models/gemini-x"}]}' '"content"'
gerej "outputDimensionality 0" '{"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]},"outputDimensionality":0}]}' '"output_dimensionality"'
BIG=$(python3 -c 'import json;print(json.dumps({"requests":[{"model":"models/gemini-x","content":{"parts":[{"text":"a"}]}}]*101}))')
gerej "more than 100 requests" "$BIG" '"at most 100"'
s=$(gem batchEmbedContents "$ER")
check "gemini: batchEmbedContents without key gives 403 PERMISSION_DENIED" pyjson "$TMP/body" "$s==403 and d['error']['status']=='PERMISSION_DENIED'"
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
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'x-api-key: wrong' -H 'anthropic-version: 2023-06-01' "$U2/v1/messages" -d '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}')
check "--require-key: anthropic wrong key gives 401 authentication_error" sh -c "test $s = 401 && grep -q authentication_error $TMP/body"
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'x-api-key: sk-test' -H 'anthropic-version: 2023-06-01' "$U2/v1/messages" -d '{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}')
check "--require-key: anthropic right key gives 200" test "$s" = 200
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'x-goog-api-key: wrong' "$U2/v1beta/models/g:generateContent" -d '{"contents":[{"role":"user","parts":[{"text":"x"}]}]}')
check "--require-key: gemini wrong key gives 400 API_KEY_INVALID" sh -c "test $s = 400 && grep -q API_KEY_INVALID $TMP/body"
s=$(curl -s -o "$TMP/body" -w '%{http_code}' "$U2/v1beta/models/g:generateContent?key=sk-test" -d '{"contents":[{"role":"user","parts":[{"text":"x"}]}]}')
check "--require-key: gemini right key (query) gives 200" test "$s" = 200
s=$(curl -s -o "$TMP/body" -w '%{http_code}' -H 'x-goog-api-key: wrong' "$U2/v1beta/models/g:batchEmbedContents" -d '{"requests":[{"model":"models/g","content":{"parts":[{"text":"x"}]}}]}')
check "--require-key: gemini batchEmbedContents wrong key gives 400 API_KEY_INVALID" sh -c "test $s = 400 && grep -q API_KEY_INVALID $TMP/body"
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
