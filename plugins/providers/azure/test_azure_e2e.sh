#!/usr/bin/env bash
# End to end on 127.0.0.1: compassd with azure deployments in front of mockllm's Azure wire
# format (which refuses requests without api-version or a key, and --require-key checks it).
# usage: test_azure_e2e.sh /path/to/compassd /path/to/mockllm /path/to/plugin/dir
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -u
COMPASSD=${1:?usage: test_azure_e2e.sh COMPASSD MOCKLLM PLUGIN_DIR}
MOCKLLM=${2:?usage: test_azure_e2e.sh COMPASSD MOCKLLM PLUGIN_DIR}
PLUGINS=${3:?usage: test_azure_e2e.sh COMPASSD MOCKLLM PLUGIN_DIR}
TMP=$(mktemp -d)
PASS=0
FAIL=0
MPID=
MPID2=
CPID=
cleanup() {
    for p in $CPID $MPID $MPID2; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null
            wait "$p" 2>/dev/null
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1${2:+: $2}"; }
# pyjson FILE 'python expression over d' : exit 0 iff the expression is true
pyjson() {
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
ok=eval("(" + sys.argv[2] + ")")
if not ok: print(json.dumps(d)[:600])
sys.exit(0 if ok else 1)' "$1" "$2"
}
check() { # name, command...
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$out"; fi
}
wait_port() { # file pid
    for _ in $(seq 1 100); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

"$MOCKLLM" --port 0 --port-file "$TMP/mport" --require-key az-secret --quiet \
    >"$TMP/mock.out" 2>&1 &
MPID=$!
wait_port "$TMP/mport" $MPID || { bad "mockllm starts" "$(cat "$TMP/mock.out")"; echo "$PASS passed, $FAIL failed"; exit 1; }
MPORT=$(cat "$TMP/mport")
M="http://127.0.0.1:$MPORT"

cat >"$TMP/compassd.conf" <<CONF
server = { listen = "127.0.0.1:0"; log_requests = false; };
plugins = { paths = [ "$PLUGINS" ]; };
deployments = (
  {
    name = "az";
    plugin = "azure";
    base_url = "$M";
    api_key_env = "AZ_E2E_KEY";
    models = [ "gpt-4o", "text-embedding-3-small" ];
    options = { deployments = "gpt-4o=prod-4o; text-embedding-3-small=emb-small"; };
  },
  {
    name = "az-entra";
    plugin = "azure";
    base_url = "$M/openai/";
    api_key_env = "AZ_E2E_TOKEN";
    models = [ "gpt-4o-mini" ];
    options = { auth = "bearer"; api_version = "2025-04-01-preview"; };
  },
  {
    name = "az-badkey";
    plugin = "azure";
    base_url = "$M";
    api_key_env = "AZ_E2E_BADKEY";
    models = [ "gpt-4.1" ];
  }
);
CONF
AZ_E2E_KEY=az-secret AZ_E2E_TOKEN=az-secret AZ_E2E_BADKEY=wrong \
    "$COMPASSD" --config "$TMP/compassd.conf" --port-file "$TMP/cport" --log-level warn \
    >"$TMP/compassd.out" 2>&1 &
CPID=$!
wait_port "$TMP/cport" $CPID || { bad "compassd starts" "$(tail -5 "$TMP/compassd.out")"; echo "$PASS passed, $FAIL failed"; exit 1; }
C="http://127.0.0.1:$(cat "$TMP/cport")"

chat() { # body -> $TMP/body, $TMP/headers; prints the status
    curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' -X POST "$C/v1/chat/completions" \
        -H 'Content-Type: application/json' -d "$1"
}

# chat through the api-key deployment: deployment mapping and api-version on the wire
st=$(chat '{"model":"gpt-4o","messages":[{"role":"user","content":"hello azure"}]}')
check "chat via api-key: 200" test "$st" = 200
check "chat via api-key: mock answered" pyjson "$TMP/body" \
    'd["choices"][0]["message"]["content"] == "mock reply to: hello azure" and d["usage"]["total_tokens"] > 0'
check "chat via api-key: x-compass-provider az" grep -qi '^x-compass-provider: az' "$TMP/headers"
curl -s "$M/_mock/stats" >"$TMP/stats"
check "upstream path is the mapped deployment" pyjson "$TMP/stats" \
    'd["last_request"]["path"] == "/openai/deployments/prod-4o/chat/completions"'
check "upstream got api-key, no Authorization" pyjson "$TMP/stats" \
    'd["last_request"]["headers"].get("api-key") == "present" and d["last_request"]["headers"].get("authorization") == "absent"'
check "upstream body names the model" pyjson "$TMP/stats" 'd["last_request"]["body"]["model"] == "gpt-4o"'

# stream
curl -s -N -X POST "$C/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream please"}]}' \
    >"$TMP/sse"
check "stream: content arrives in chunks" python3 -c 'import json,sys
txt="";usage=None;done=False
for l in open(sys.argv[1]):
    l=l.strip()
    if not l.startswith("data: "): continue
    p=l[6:]
    if p=="[DONE]": done=True; continue
    o=json.loads(p)
    for c in o.get("choices",[]): txt+=c.get("delta",{}).get("content") or ""
    if o.get("usage"): usage=o["usage"]
assert done and txt=="mock reply to: stream please" and usage and usage["completion_tokens"]>0, (txt,usage,done)' "$TMP/sse"

# Entra ID bearer deployment, base_url pasted with /openai/, a preview api-version
st=$(chat '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"token auth"}]}')
check "chat via bearer: 200" test "$st" = 200
curl -s "$M/_mock/stats" >"$TMP/stats"
check "bearer: upstream path is the model's own deployment" pyjson "$TMP/stats" \
    'd["last_request"]["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"'
check "bearer: Authorization present, no api-key" pyjson "$TMP/stats" \
    'd["last_request"]["headers"].get("authorization") == "present" and "api-key" not in d["last_request"]["headers"]'

# embeddings
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST "$C/v1/embeddings" \
    -H 'Content-Type: application/json' \
    -d '{"model":"text-embedding-3-small","input":["one","two"]}')
check "embeddings: 200" test "$st" = 200
check "embeddings: two vectors" pyjson "$TMP/body" \
    'len(d["data"]) == 2 and len(d["data"][0]["embedding"]) == 8'
curl -s "$M/_mock/stats" >"$TMP/stats"
check "embeddings: upstream path" pyjson "$TMP/stats" \
    'd["last_request"]["path"] == "/openai/deployments/emb-small/embeddings"'

# a wrong key: Azure's 401 comes back as an OpenAI-shaped error, never a 500 or a crash
st=$(chat '{"model":"gpt-4.1","messages":[{"role":"user","content":"x"}]}')
check "wrong key: an error status, not 200 or 500" test "$st" != 200 -a "$st" != 500
check "wrong key: OpenAI error shape" pyjson "$TMP/body" '"message" in d["error"]'

# the mock refuses what Azure refuses
st=$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST \
    "$M/openai/deployments/prod-4o/chat/completions" -H 'api-key: az-secret' \
    -d '{"messages":[{"role":"user","content":"x"}]}')
check "mock: no api-version is 404 Resource not found" pyjson "$TMP/body" \
    '"'"$st"'" == "404" and d["error"]["message"] == "Resource not found"'

# mockllm without --require-key still wants what Azure wants: api-version, then some key
"$MOCKLLM" --port 0 --port-file "$TMP/mport2" --quiet >"$TMP/mock2.out" 2>&1 &
MPID2=$!
if wait_port "$TMP/mport2" $MPID2; then
    M2="http://127.0.0.1:$(cat "$TMP/mport2")"
    P="/openai/deployments/dep1"
    mock() { # path-and-query, extra curl args... -> status
        local pq=$1
        shift
        curl -s -o "$TMP/body" -w '%{http_code}' -X POST "$M2$pq" "$@" \
            -d '{"messages":[{"role":"user","content":"hi"}]}'
    }
    check "mock: no key is Azure's 401" test "$(mock "$P/chat/completions?api-version=2024-10-21")" = 401
    check "mock: 401 body is Azure's" pyjson "$TMP/body" '"Access denied" in d["error"]["message"]'
    check "mock: no api-version wins over no key (404)" \
        test "$(mock "$P/chat/completions")" = 404
    check "mock: any api-key is accepted" \
        test "$(mock "$P/chat/completions?api-version=2024-10-21" -H 'api-key: x')" = 200
    check "mock: a body without model answers as the deployment" pyjson "$TMP/body" \
        'd["model"] == "dep1"'
    check "mock: Bearer is accepted" \
        test "$(mock "$P/chat/completions?api-version=1" -H 'Authorization: Bearer t')" = 200
    check "mock: embeddings need api-version too" test "$(mock "$P/embeddings" -H 'api-key: x')" = 404
    kill -TERM $MPID2 2>/dev/null
    wait $MPID2 2>/dev/null
else
    bad "second mockllm starts" "$(cat "$TMP/mock2.out")"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
