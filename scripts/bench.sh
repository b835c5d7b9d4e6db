#!/usr/bin/env bash
# bench.sh: throughput, concurrency and router figures for compassd. Not a test: it prints
# numbers and passes no judgement on them; it exits non-zero only when a run could not be made
# (a server did not start, a tool is missing, the load client could not be built...).
#
# Usage: scripts/bench.sh [BUILD_DIR]      (default: build; relative to the repo root)
# Env:   BENCH_STREAMS=5000       concurrent slow streams in part 2
#        BENCH_DURATION=10        seconds per wrk run in part 1 (9 runs; ~3 min in all)
#        BENCH_MOCK_THREADS=2     mockllm worker threads (2 is the fastest on 2 cores)
#        BENCH_COMPASS_THREADS=0  compassd server.threads for the main runs (0, the shipped
#                                 default: one event loop per core, as nginx's workers auto)
#        BENCH_PACE_MS=5          part 1b: each of the 64 connections waits a random time of
#                                 this mean (exponential) between a response and its next request
#        BENCH_ROUNDS=5           part 1c: rounds of (a), (b), (c), (c thr=1), then (a), (b) and
#                                 (c) paced,
#                                 BENCH_ROUND_DURATION=5 seconds each
#
# 1. Throughput (wrk -t2 -c64, POST of a ~300-byte chat body) against: (a) mockllm directly,
#    (b) nginx as a keepalive reverse proxy to it, (c) compassd's openai plugin pointed at it
#    (request log off; again with the log on, written to /dev/null; again on one event
#    loop), (d) compassd answering through the in-process mock provider (no upstream),
#    (e) compassd's anthropic plugin against mockllm's /v1/messages (same client body; ratio
#    to (c)), (f) one compassd with two routes over the same two openai deployments, one
#    ranked by the Lua policy scripts/routing/cheapest_healthy.lua, one by priority (ratio).
# 1b. Latency at a fixed load: the same three targets (a)-(c), each connection pausing a
#    random time between requests (exponential, mean BENCH_PACE_MS), so every target gets about
#    the same offered load (~64 / (pace + latency) req/s, well under each one's capacity) and
#    the arrivals are close to a Poisson stream. (A fixed pause keeps the 64 connections in
#    step: they arrive as one burst every pause, and the last of a burst waits for the whole
#    burst.) At saturation (part 1) a closed loop of 64 connections measures queueing (latency
#    = 64 / throughput); paced, p99 added over direct is the time the gateway adds to a request.
# 1c. p99 added over direct at 64 connections, again: BENCH_ROUNDS rounds, each running (a),
#    (b), (c) and (c) on one loop back to back; the median of each round's difference. One
#    run's p99 swings by a millisecond or more on this kind of machine (direct's own: 2.0-7.8
#    ms), and a difference taken within a round cancels what the machine was doing at the time.
#    Each round also runs (a), (b) and (c) paced as in 1b; the median of those differences too.
#    nginx's figures are the reference: what a plain C reverse proxy adds on the same machine.
# 2. N concurrent ~10 s streams through compassd to mockllm, with compassd's threads and RSS.
# 3. bench_routers / bench_lua from the build, when they were built.
# 4. bench_translate from the build: CPU ns per chunk of each provider plugin's stream parser
#    on a recorded 1,000-chunk stream in its wire format (fake host, no I/O).
# Last line: "BENCH key=value ...".
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
N=${BENCH_STREAMS:-5000}
DUR=${BENCH_DURATION:-10}
MOCK_THREADS=${BENCH_MOCK_THREADS:-2}
CD_THREADS=${BENCH_COMPASS_THREADS:-0}
LUA=$root/tests/bench/chat.lua
MODEL=gpt-4o-mini
PACE_MS=${BENCH_PACE_MS:-5}

die() { echo "bench: ERROR: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

[ -x "$build/compassd" ] || die "$build/compassd not found (build first: cmake --build $build)"
ML=$(find "$build" -name mockllm -type f -perm -u+x 2>/dev/null | head -1)
[ -n "$ML" ] || die "mockllm not found under $build"
[ -f "$LUA" ] || die "$LUA missing"

# ---- tools
need_pkgs=()
for p in wrk nginx-light; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  note "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${need_pkgs[@]}" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y "${need_pkgs[@]}" >/dev/null; } ||
    die "apt-get install ${need_pkgs[*]} failed"
fi
command -v wrk >/dev/null || die "wrk missing after install"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx missing after install"

# ---- file descriptors: 2 per stream in compassd (client + upstream), 1 in mockllm and client
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((2 * N + 256)) ]; then
  note "warning: open-file limit is $nofile (hard limit $(ulimit -Hn)); compassd needs ~$((2 * N + 256)) for $N streams"
fi

tmp=$(mktemp -d /tmp/compass-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_file() { for _ in $(seq 1 100); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }
stop() { # pid: TERM, then KILL after 5 s
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  return 0
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null && return
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
  return 1
}
# rss_kb / threads of a pid
proc_field() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status" 2>/dev/null; }

# ---- load client for part 2: from the build when tests/bench is a subdirectory, else compile it
SC=$(find "$build" -name bench_streams -type f -perm -u+x 2>/dev/null | head -1)
if [ -z "$SC" ]; then
  SC=$tmp/bench_streams
  cc -O2 -std=gnu11 -o "$SC" "$root/tests/bench/bench_streams.c" \
    $(pkg-config --cflags --libs libcurl) 2>"$tmp/cc.err" ||
    { cat "$tmp/cc.err"; die "cannot build tests/bench/bench_streams.c (needs libcurl4-openssl-dev)"; }
fi

load1() { cut -d' ' -f1 /proc/loadavg; }
load_start=$(load1)
echo "== compass benchmark  $(date -u +%FT%TZ)  $(nproc) cores  load average $load_start  build=$build"
awk -v l="$load_start" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }' &&
  echo "   WARNING: the machine is already busy (load $load_start on $(nproc) cores): figures will be noisy"
echo "   compassd $("$build/compassd" --version 2>/dev/null | head -1)  $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)  $("$NGINX" -v 2>&1)"

# ---- mockllm (one instance for everything)
"$ML" --port 0 --port-file "$tmp/ml.port" --threads "$MOCK_THREADS" --quiet >"$tmp/ml.out" 2>"$tmp/ml.err" &
ml_pid=$!; pids+=("$ml_pid")
wait_file "$tmp/ml.port" || { cat "$tmp/ml.err"; die "mockllm did not start"; }
ML_PORT=$(cat "$tmp/ml.port")

# ---- compassd
# start_compassd NAME CONF_BODY [stderr-target] -> sets CD_PID, CD_PORT
start_compassd() {
  local name=$1 body=$2 errto=${3:-$tmp/$1.log}
  printf '%s\n' "$body" >"$tmp/$name.conf"
  rm -f "$tmp/$name.port"
  "$build/compassd" --config "$tmp/$name.conf" --port-file "$tmp/$name.port" 2>"$errto" &
  CD_PID=$!; pids+=("$CD_PID")
  if ! wait_file "$tmp/$name.port"; then
    [ -f "$errto" ] && tail -20 "$errto"
    die "compassd ($name) did not start"
  fi
  CD_PORT=$(cat "$tmp/$name.port")
}
conf_upstream() { # threads log_requests
  cat <<CONF
server = { listen = "127.0.0.1:0"; threads = $1; log_requests = $2; max_connections = 20000; };
plugins = { paths = [ "$build/plugins" ]; };
deployments = (
  { name = "up"; plugin = "openai"; base_url = "http://127.0.0.1:$ML_PORT/v1"; models = [ "$MODEL" ]; }
);
routes = ( { name = "auto"; candidates = [ "up/$MODEL" ]; } );
CONF
}
conf_mock() {
  cat <<CONF
server = { listen = "127.0.0.1:0"; threads = $CD_THREADS; log_requests = false; max_connections = 20000; };
plugins = { paths = [ "$build/plugins" ]; };
deployments = (
  { name = "local"; plugin = "mock"; models = [ "$MODEL" ]; options = { latency_ms = 0; chunk_delay_ms = 0; }; }
);
routes = ( { name = "auto"; candidates = [ "local/$MODEL" ]; } );
CONF
}

# (e): the anthropic plugin against mockllm's Anthropic endpoint (POST {base_url}/v1/messages).
# mockllm wants some x-api-key: a dummy one, from a variable of our own.
ANTHROPIC_MODEL=claude-3-5-haiku-latest
export BENCH_ANTHROPIC_KEY=bench-dummy-key
conf_anthropic() {
  cat <<CONF
server = { listen = "127.0.0.1:0"; threads = $CD_THREADS; log_requests = false; max_connections = 20000; };
plugins = { paths = [ "$build/plugins" ]; };
deployments = (
  { name = "claude"; plugin = "anthropic"; base_url = "http://127.0.0.1:$ML_PORT";
    api_key_env = "BENCH_ANTHROPIC_KEY"; models = [ "$ANTHROPIC_MODEL" ]; }
);
routes = ( { name = "auto"; candidates = [ "claude/$ANTHROPIC_MODEL" ]; } );
CONF
}
# (f): Lua-ranked vs priority route over the same two deployments (different prices, so the
# policy has something to rank: it sends everything to up2, priority to up1).
LUA_POLICY=$root/scripts/routing/cheapest_healthy.lua
conf_routes() {
  cat <<CONF
server = { listen = "127.0.0.1:0"; threads = $CD_THREADS; log_requests = false; max_connections = 20000; };
plugins = { paths = [ "$build/plugins" ]; };
deployments = (
  { name = "up1"; plugin = "openai"; base_url = "http://127.0.0.1:$ML_PORT/v1"; models = [ "$MODEL" ];
    price_in = 0.15; price_out = 0.60; },
  { name = "up2"; plugin = "openai"; base_url = "http://127.0.0.1:$ML_PORT/v1"; models = [ "$MODEL" ];
    price_in = 0.10; price_out = 0.40; }
);
routes = (
  { name = "bench-lua"; strategy = "lua"; options = { policy = "$LUA_POLICY"; };
    candidates = [ "up1/$MODEL", "up2/$MODEL" ]; },
  { name = "bench-priority"; strategy = "priority"; candidates = [ "up1/$MODEL", "up2/$MODEL" ]; }
);
CONF
}

# ---- wrk
declare -A RPS P50 P99 ERRS
order=()
# run_wrk KEY LABEL URL [MODEL]   (MODEL replaces the body's model, through BENCH_MODEL)
run_wrk() {
  local key=$1 label=$2 url=$3 out=$tmp/wrk.$1
  export BENCH_MODEL=${4:-}
  # one warm-up request (and a check that the target answers 200)
  local code
  code=$(curl -s -m 5 -o "$tmp/probe.$key" -D "$tmp/probe_h.$key" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "$(lua_body)" "$url")
  [ "$code" = 200 ] || { head -c 400 "$tmp/probe.$key"; echo; die "$label: probe got HTTP $code from $url"; }
  timeout $((DUR + 30)) wrk -t2 -c64 -d"${DUR}s" --timeout 5s --latency -s "${WRK_SCRIPT:-$LUA}" "$url" >"$out" 2>&1 ||
    { cat "$out"; die "$label: wrk failed"; }
  read -r rps p50 p99 errs < <(awk '
    function ms(v,  n, u) { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
      if (u == "us") return n / 1000; if (u == "ms") return n; if (u == "s") return n * 1000;
      if (u == "m") return n * 60000; return n }
    /^Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { e += $NF }
    /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
    END { printf "%.0f %.2f %.2f %d\n", rps, p50, p99, e }' "$out")
  [ -n "$rps" ] && [ "$rps" != 0 ] || { cat "$out"; die "$label: could not parse wrk output"; }
  RPS[$key]=$rps; P50[$key]=$p50; P99[$key]=$p99; ERRS[$key]=$errs; LABEL[$key]=$label
  order+=("$key")
  printf '   %-52s %9s req/s  p50 %7s ms  p99 %7s ms%s\n' "$label" "$rps" "$p50" "$p99" \
    "$([ "$errs" -gt 0 ] && echo "  ($errs errors/non-2xx)")"
}
declare -A LABEL
lua_body() { # the body chat.lua sends, for the probe (with BENCH_MODEL applied, as chat.lua does)
  lua_text=$(awk '/^wrk.body/ { on = 1 } on && !/^wrk.body/ && !/^  \.\. / { exit } on' "$LUA" |
    sed -e 's/^wrk.body = //' -e 's/^  \.\. //' | sed -e "s/^'//" -e "s/'\$//" | tr -d '\n')
  [ -n "${BENCH_MODEL:-}" ] &&
    lua_text=$(printf '%s' "$lua_text" | sed "s/\"model\":\"[^\"]*\"/\"model\":\"$BENCH_MODEL\"/")
  printf '%s' "$lua_text"
}

echo
echo "== 1. throughput: wrk -t2 -c64 -d${DUR}s, POST /v1/chat/completions (non-streaming, $(lua_body | wc -c) B body)"
echo "   mockllm --threads $MOCK_THREADS on 127.0.0.1:$ML_PORT"
run_wrk a "(a) mockllm direct" "http://127.0.0.1:$ML_PORT/v1/chat/completions"
# part 1b's paced runs are made while each target is up; their table is printed after part 1's
# wrk rounds delay() to whole milliseconds; each thread seeds its own generator
{
  cat "$LUA"
  echo "function init(args) math.randomseed(os.time() + tonumber(tostring({}):match('0x(%x+)') or '0', 16) % 100000) end"
  echo "function delay() return math.floor(-$PACE_MS * math.log(1 - math.random()) + 0.5) end"
} >"$tmp/paced.lua"
paced() { WRK_SCRIPT=$tmp/paced.lua run_wrk "$@" >/dev/null; }
paced pa "(a) mockllm direct, paced" "http://127.0.0.1:$ML_PORT/v1/chat/completions"

# (b) nginx
NG_PORT=$(free_port) || die "no free port for nginx"
mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  upstream mockllm { server 127.0.0.1:$ML_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      proxy_pass http://mockllm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
"$NGINX" -e "$tmp/nginx/logs/error.log" -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" -g 'daemon off;' \
  >"$tmp/nginx/out" 2>&1 &
ng_pid=$!; pids+=("$ng_pid")
for _ in $(seq 1 50); do
  curl -s -o /dev/null -m 1 "http://127.0.0.1:$NG_PORT/" && break
  kill -0 "$ng_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$ng_pid" 2>/dev/null || { cat "$tmp/nginx/out" "$tmp/nginx/logs/error.log" 2>/dev/null; die "nginx did not start"; }
run_wrk b "(b) nginx reverse proxy (workers auto, keepalive 64)" "http://127.0.0.1:$NG_PORT/v1/chat/completions"
paced pb "(b) nginx reverse proxy, paced" "http://127.0.0.1:$NG_PORT/v1/chat/completions"
# nginx stays up (idle) for part 1c's rounds

# (c) compassd -> openai plugin -> mockllm, request log off
start_compassd c "$(conf_upstream "$CD_THREADS" false)"
run_wrk c "(c) compassd openai->mockllm, log off, thr=${CD_THREADS/#0/auto}" "http://127.0.0.1:$CD_PORT/v1/chat/completions"
paced pc "(c) compassd openai->mockllm, paced" "http://127.0.0.1:$CD_PORT/v1/chat/completions"
c_log=$tmp/c.log
c_pid=$CD_PID
stop "$c_pid"
# (e) the same through the anthropic plugin: compassd translates the OpenAI body to a Messages
# request, mockllm answers in Anthropic's format, compassd translates back. Same wrk body, with
# the model named by the anthropic deployment.
start_compassd e "$(conf_anthropic)"
run_wrk e "(e) compassd anthropic->mockllm, log off, thr=${CD_THREADS/#0/auto}" \
  "http://127.0.0.1:$CD_PORT/v1/chat/completions" "$ANTHROPIC_MODEL"
e_log=$tmp/e.log
stop "$CD_PID"
# (c2) the same with the per-request log on, written to /dev/null
start_compassd clog "$(conf_upstream "$CD_THREADS" true)" /dev/null
run_wrk clog "(c) same, log_requests=true to /dev/null" "http://127.0.0.1:$CD_PORT/v1/chat/completions"
stop "$CD_PID"
# (c3) the same on one event loop, request log off (what a single core of compassd does)
if [ "$CD_THREADS" != 1 ]; then
  start_compassd c1 "$(conf_upstream 1 false)"
  run_wrk c1 "(c) same, log off, thr=1" "http://127.0.0.1:$CD_PORT/v1/chat/completions"
  stop "$CD_PID"
fi
# (d) compassd -> in-process mock provider
start_compassd d "$(conf_mock)"
run_wrk d "(d) compassd in-process mock, log off, thr=${CD_THREADS/#0/auto}" "http://127.0.0.1:$CD_PORT/v1/chat/completions"
stop "$CD_PID"
# (f) one compassd, two routes over the same two openai deployments (both -> mockllm): one
# ranked by a Lua policy, one by priority. wrk against each, the model being the route name.
start_compassd f "$(conf_routes)"
run_wrk flua "(f) compassd route strategy=lua (cheapest_healthy)" \
  "http://127.0.0.1:$CD_PORT/v1/chat/completions" bench-lua
run_wrk fprio "(f) compassd route strategy=priority, same 2 deps" \
  "http://127.0.0.1:$CD_PORT/v1/chat/completions" bench-priority
f_log=$tmp/f.log
stop "$CD_PID"

# (1c) rounds of direct, compassd and compassd on one loop, back to back, two daemons up
ROUNDS=${BENCH_ROUNDS:-5}
start_compassd r "$(conf_upstream "$CD_THREADS" false)"; r_pid=$CD_PID; r_port=$CD_PORT
start_compassd r1 "$(conf_upstream 1 false)"; r1_pid=$CD_PID; r1_port=$CD_PORT
lat_diff() { local -n v=$1; awk -v c="${v[$2]}" -v a="${v[$3]}" 'BEGIN { printf "%.2f", c - a }'; } # P50|P99 KEY - KEY
p99_diff() { lat_diff P99 "$@"; }
round_diffs=""; round1_diffs=""; roundp_diffs=""; roundn_diffs=""; roundpn_diffs=""
for i in $(seq 1 "$ROUNDS"); do
  DUR=${BENCH_ROUND_DURATION:-5} run_wrk "ra$i" "(1c) round $i: direct" \
    "http://127.0.0.1:$ML_PORT/v1/chat/completions" >/dev/null
  DUR=${BENCH_ROUND_DURATION:-5} run_wrk "rb$i" "(1c) round $i: nginx" \
    "http://127.0.0.1:$NG_PORT/v1/chat/completions" >/dev/null
  DUR=${BENCH_ROUND_DURATION:-5} run_wrk "rc$i" "(1c) round $i: compassd" \
    "http://127.0.0.1:$r_port/v1/chat/completions" >/dev/null
  DUR=${BENCH_ROUND_DURATION:-5} run_wrk "rd$i" "(1c) round $i: compassd thr=1" \
    "http://127.0.0.1:$r1_port/v1/chat/completions" >/dev/null
  DUR=${BENCH_ROUND_DURATION:-5} paced "rpa$i" "(1c) round $i: direct, paced" \
    "http://127.0.0.1:$ML_PORT/v1/chat/completions"
  DUR=${BENCH_ROUND_DURATION:-5} paced "rpb$i" "(1c) round $i: nginx, paced" \
    "http://127.0.0.1:$NG_PORT/v1/chat/completions"
  DUR=${BENCH_ROUND_DURATION:-5} paced "rpc$i" "(1c) round $i: compassd, paced" \
    "http://127.0.0.1:$r_port/v1/chat/completions"
  round_diffs+=" $(p99_diff "rc$i" "ra$i")"; round1_diffs+=" $(p99_diff "rd$i" "ra$i")"
  roundp_diffs+=" $(p99_diff "rpc$i" "rpa$i")"
  roundn_diffs+=" $(p99_diff "rb$i" "ra$i")"; roundpn_diffs+=" $(p99_diff "rpb$i" "rpa$i")"
done
stop "$r_pid"; stop "$r1_pid"; stop "$ng_pid"
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# shellcheck disable=SC2086 # word splitting of the lists is meant
p99_added_median=$(median $round_diffs); p99_added_thr1_median=$(median $round1_diffs)
p99_added_paced_median=$(median $roundp_diffs)
nginx_p99_added_median=$(median $roundn_diffs); nginx_p99_added_paced_median=$(median $roundpn_diffs)

ratio() { awk -v x="$1" -v y="$2" 'BEGIN { printf "%.2f", (y > 0 ? x / y : 0) }'; }
ratio_c_b=$(ratio "${RPS[c]}" "${RPS[b]}")
ratio_c_a=$(ratio "${RPS[c]}" "${RPS[a]}")
p99_added=$(p99_diff c a)
p99_added_paced=$(p99_diff pc pa)
p50_added_paced=$(lat_diff P50 pc pa)
ratio_anthropic_openai=$(ratio "${RPS[e]}" "${RPS[c]}")
# where compassd sent each probe (x-compass-provider): e -> claude; the Lua policy picks the
# cheaper up2, priority the first listed, up1 (up1 on the Lua route would mean a fallback)
served_by() { tr -d '\r' <"$tmp/probe_h.$1" 2>/dev/null | awk -F': ' 'tolower($1)=="x-compass-provider" {print $2}'; }
ratio_lua_priority=$(ratio "${RPS[flua]}" "${RPS[fprio]}")
echo
printf '   %-52s %9s %9s %9s\n' target "req/s" "p50 ms" "p99 ms"
for k in "${order[@]}"; do
  case $k in p? | r[abcdp]*) continue ;; esac
  printf '   %-52s %9s %9s %9s\n' "${LABEL[$k]}" "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}"
done
echo "   ratio c/b (req/s): $ratio_c_b   ratio c/a (req/s): $ratio_c_a   p99 added over direct (c-a): $p99_added ms"
echo "   (c) is without per-request logs; with log_requests=true to /dev/null: ${RPS[clog]} req/s, p99 ${P99[clog]} ms"
echo "   ratio anthropic/openai (e/c, req/s): $ratio_anthropic_openai   ratio lua/priority (f, req/s): $ratio_lua_priority   (goal for both: >= 0.9)"
echo "   probes served by: (e) $(served_by e)  (f) lua route $(served_by flua), priority route $(served_by fprio)"
total_errs=0; for k in "${order[@]}"; do total_errs=$((total_errs + ERRS[$k])); done
[ "$total_errs" -gt 0 ] && for k in "${order[@]}"; do
  [ "${ERRS[$k]}" -gt 0 ] && echo "   WARNING: ${LABEL[$k]}: ${ERRS[$k]} socket errors or non-2xx responses (see wrk output below)" &&
    sed 's/^/     | /' "$tmp/wrk.$k"
done
for l in c:"$c_log" e:"$e_log" f:"$f_log"; do
  if grep -q '"level":"\(error\|warn\)"' "${l#*:}" 2>/dev/null; then
    echo "   compassd (${l%%:*}) logged $(grep -c '"level":"\(error\|warn\)"' "${l#*:}") warn/error lines, first:"
    grep -m3 '"level":"\(error\|warn\)"' "${l#*:}" | cut -c1-300 | sed 's/^/     | /'
  fi
done

echo
echo "== 1b. latency at a fixed load: wrk -t2 -c64 -d${DUR}s, each connection pausing a random ${PACE_MS} ms on average between requests"
for k in pa pb pc; do
  printf '   %-52s %9s %9s %9s\n' "${LABEL[$k]}" "${RPS[$k]}" "${P50[$k]}" "${P99[$k]}"
done
echo "   added over direct at that load (pc-pa): p50 $p50_added_paced ms, p99 $p99_added_paced ms" \
  "  (nginx, pb-pa: p99 $(p99_diff pb pa) ms)"

echo
echo "== 1c. p99 at 64 connections in $ROUNDS rounds of ${BENCH_ROUND_DURATION:-5} s: direct, nginx, compassd (thr=${CD_THREADS/#0/auto}), compassd thr=1; then direct, nginx and compassd paced (${PACE_MS} ms mean)"
for i in $(seq 1 "$ROUNDS"); do
  printf '   round %s: p99 direct %6s  nginx %6s  compassd %6s  thr=1 %6s ms  (req/s %s, %s, %s, %s)  paced: direct %s  nginx %s  compassd %s ms\n' \
    "$i" "${P99[ra$i]}" "${P99[rb$i]}" "${P99[rc$i]}" "${P99[rd$i]}" \
    "${RPS[ra$i]}" "${RPS[rb$i]}" "${RPS[rc$i]}" "${RPS[rd$i]}" "${P99[rpa$i]}" "${P99[rpb$i]}" "${P99[rpc$i]}"
done
echo "   p99 added over direct, median of the rounds: compassd $p99_added_median ms (rounds:$round_diffs)," \
  "thr=1 $p99_added_thr1_median ms (rounds:$round1_diffs), paced $p99_added_paced_median ms (rounds:$roundp_diffs)"
echo "   the same for nginx: $nginx_p99_added_median ms (rounds:$roundn_diffs), paced $nginx_p99_added_paced_median ms (rounds:$roundpn_diffs)"

# ---- 2. concurrent slow streams
echo
echo "== 2. concurrency: $N streams through compassd -> mockllm, 100 chunks x 100 ms each (~10 s), opened within 2 s"
# reference: the same load straight to mockllm (what the client + mockllm alone achieve here)
r_out=$(timeout 90 "$SC" "http://127.0.0.1:$ML_PORT/v1/chat/completions" "$N" 2000 60 "$MODEL" 100 100 \
  2>"$tmp/streams_direct.err")
[ -n "$r_out" ] || { cat "$tmp/streams_direct.err"; die "stream load client failed against mockllm directly"; }
echo "   reference, mockllm direct: $r_out"
rkv() { printf '%s\n' "$r_out" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
sd_ok=$(rkv ok); sd_p50=$(rkv p50_s); sd_max=$(rkv max_s)
sleep 1
start_compassd s "$(cat <<CONF
server = {
  listen = "127.0.0.1:0"; threads = $CD_THREADS; log_requests = true; max_connections = 20000;
  timeouts = { connect_ms = 10000; first_byte_ms = 30000; idle_ms = 30000; total_ms = 60000; };
};
plugins = { paths = [ "$build/plugins" ]; };
deployments = (
  { name = "up"; plugin = "openai"; base_url = "http://127.0.0.1:$ML_PORT/v1"; models = [ "$MODEL" ]; }
);
routes = ( { name = "auto"; candidates = [ "up/$MODEL" ]; } );
CONF
)"
s_pid=$CD_PID
sleep 1
threads_idle=$(proc_field "$s_pid" Threads)
rss_idle_kb=$(proc_field "$s_pid" VmRSS)
sampler() {
  while kill -0 "$s_pid" 2>/dev/null; do
    echo "$(proc_field "$s_pid" Threads) $(proc_field "$s_pid" VmRSS)"
    sleep 0.5
  done
}
sampler >"$tmp/samples" &
smp_pid=$!; pids+=("$smp_pid")
s_out=$(timeout 90 "$SC" "http://127.0.0.1:$CD_PORT/v1/chat/completions" "$N" 2000 60 "$MODEL" 100 100 \
  2>"$tmp/streams.err")
s_rc=$?
sleep 0.5
kill "$smp_pid" 2>/dev/null; wait "$smp_pid" 2>/dev/null
alive=yes; kill -0 "$s_pid" 2>/dev/null || alive=no
threads_after=$(proc_field "$s_pid" Threads)
rss_after_kb=$(proc_field "$s_pid" VmRSS)
echo "   client: ${s_out:-<no output, exit $s_rc>}"
[ -s "$tmp/streams.err" ] && sed 's/^/   client: /' "$tmp/streams.err"
[ -n "$s_out" ] || die "stream load client produced no result (exit $s_rc)"
kv() { printf '%s\n' "$s_out" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
streams_ok=$(kv ok); streams_failed=$(kv failed); streams_max_s=$(kv max_s)
streams_p50_s=$(kv p50_s); streams_max_open=$(kv max_open)
read -r threads_peak rss_peak_kb < <(awk -v t="$threads_idle" -v r="$rss_idle_kb" '
  NF == 2 { if ($1 > t) t = $1; if ($2 > r) r = $2 } END { print t, r }' "$tmp/samples")
mb() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_idle_mb=$(mb "$rss_idle_kb"); rss_peak_mb=$(mb "$rss_peak_kb")
echo "   streams: $streams_ok ok, $streams_failed failed, threads idle $threads_idle peak $threads_peak, rss idle $rss_idle_mb MB peak $rss_peak_mb MB"
echo "   via compassd: slowest stream ${streams_max_s} s, median ${streams_p50_s} s (direct: ${sd_max} s, ${sd_p50} s), at most $streams_max_open open at once; $(wc -l <"$tmp/samples") samples"
echo "   after the run: compassd alive=$alive threads=${threads_after:-?} rss=$(mb "${rss_after_kb:-0}") MB"
# what compassd said about it
slog=$tmp/s.log
if [ -f "$slog" ]; then
  st=$(grep -o '"status":[0-9]*' "$slog" | sort | uniq -c | awk '{printf "%s%s x%s", (NR>1?", ":""), $2, $1}')
  echo "   compassd request log: ${st:-no request lines}"
  if grep -q '"level":"\(error\|warn\)"' "$slog"; then
    echo "   compassd logged $(grep -c '"level":"\(error\|warn\)"' "$slog") warn/error lines, first:"
    grep -m3 '"level":"\(error\|warn\)"' "$slog" | cut -c1-300 | sed 's/^/     | /'
  fi
fi
[ "$alive" = yes ] || { echo "   compassd DIED during the stream run; log tail:"; tail -5 "$slog" | cut -c1-300; }
stop "$s_pid"

# ---- 3. routers and Lua
echo
echo "== 3. routers and Lua policies"
router_lines=""
for b in bench_routers bench_lua; do
  exe=$(find "$build" -name "$b" -type f -perm -u+x 2>/dev/null | head -1)
  if [ -z "$exe" ]; then
    echo "   $b: not built in $build (skipped; build without COMPASS_ONLY_PLUGINS to get it)"
    continue
  fi
  if out=$(timeout 120 "$exe" 2>&1); then :; else echo "   $b exited $?"; fi
  printf '%s\n' "$out" | sed "s/^/   $b: /"
  router_lines+=$(printf '%s\n' "$out" | grep -o '\(router\|policy\)=[^ ]* median_ns=[0-9]*' |
    awk '{split($1,a,"="); split($2,b,"="); printf " %s_%s_ns=%s", a[1], a[2], b[2]}')
done

# ---- 4. stream translation per provider plugin
echo
echo "== 4. stream translation: CPU ns per chunk, recorded 1,000-chunk stream per wire format (fake host, median of 50)"
translate_lines=""
exe=$(find "$build" -name bench_translate -type f -perm -u+x 2>/dev/null | head -1)
if [ -z "$exe" ]; then
  echo "   bench_translate: not built in $build (skipped)"
else
  if out=$(timeout 60 "$exe" "$build/plugins" 50 2>&1); then :; else echo "   bench_translate exited $?"; fi
  printf '%s\n' "$out" | sed "s/^/   /"
  translate_lines=$(printf '%s\n' "$out" | grep -o 'translate=[^ ]* ns_per_chunk=[0-9]*' |
    awk '{split($1,a,"="); split($2,b,"="); printf " translate_%s_ns_per_chunk=%s", a[2], b[2]}')
fi

# ---- summary
echo
echo "   load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (at the start: $load_start)"
echo "BENCH direct_rps=${RPS[a]} nginx_rps=${RPS[b]} compassd_rps=${RPS[c]} compassd_log_rps=${RPS[clog]}" \
  "${RPS[c1]:+compassd_thr1_rps=${RPS[c1]} }compassd_mock_rps=${RPS[d]}" \
  "compassd_anthropic_rps=${RPS[e]} ratio_anthropic_openai=$ratio_anthropic_openai" \
  "compassd_lua_rps=${RPS[flua]} compassd_priority_rps=${RPS[fprio]} ratio_lua_priority=$ratio_lua_priority" \
  "ratio_c_b=$ratio_c_b ratio_c_a=$ratio_c_a" \
  "direct_p50_ms=${P50[a]} direct_p99_ms=${P99[a]} nginx_p50_ms=${P50[b]} nginx_p99_ms=${P99[b]}" \
  "compassd_p50_ms=${P50[c]} compassd_p99_ms=${P99[c]} compassd_log_p99_ms=${P99[clog]} compassd_mock_p99_ms=${P99[d]}" \
  "p99_added_ms=$p99_added p99_added_median_ms=$p99_added_median p99_added_thr1_median_ms=$p99_added_thr1_median" \
  "p99_added_paced_median_ms=$p99_added_paced_median nginx_p99_added_median_ms=$nginx_p99_added_median" \
  "nginx_p99_added_paced_median_ms=$nginx_p99_added_paced_median" \
  "wrk_errors=$total_errs" \
  "paced_direct_rps=${RPS[pa]} paced_compassd_rps=${RPS[pc]} paced_direct_p99_ms=${P99[pa]}" \
  "paced_nginx_p99_ms=${P99[pb]} paced_compassd_p99_ms=${P99[pc]} p99_added_paced_ms=$p99_added_paced" \
  "streams=$N streams_ok=$streams_ok streams_failed=$streams_failed streams_p50_s=$streams_p50_s streams_max_s=$streams_max_s" \
  "streams_direct_ok=$sd_ok streams_direct_p50_s=$sd_p50 streams_direct_max_s=$sd_max" \
  "threads_idle=$threads_idle threads_peak=$threads_peak rss_idle_mb=$rss_idle_mb rss_peak_mb=$rss_peak_mb" \
  "compassd_alive_after_streams=$alive load_start=$load_start load_end=$(load1)${router_lines}${translate_lines}"
exit 0
