#!/usr/bin/env bash
# test_install.sh SOURCE_DIR BINARY_DIR
#
# Installs the build in BINARY_DIR into a fresh temporary prefix, then, using nothing but that
# prefix (pkg-config files, headers, libcompass, compassd, the mock plugin):
#   1. builds sdk/examples/echo-provider out of tree and checks its symbol tables;
#   2. serves it from the installed compassd and talks to it over HTTP on 127.0.0.1;
#   3. builds examples/embed out of tree and runs it on the installed mock plugin.
# Every wait is bounded (20 s); compassd and the temporary directory are removed on any exit.
# Prints one line per check and ends with "N passed, M failed"; exits 1 when M > 0, 77 (skip)
# when a needed tool is missing.
set -u

src=${1:?usage: test_install.sh SOURCE_DIR BINARY_DIR}
bin=${2:?usage: test_install.sh SOURCE_DIR BINARY_DIR}
wait_s=20

for tool in make cc pkg-config nm curl timeout; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP: $tool not found"
        exit 77
    fi
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/compass-install.XXXXXX") || exit 1
daemon_pid=
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
    # daemon_pid is timeout(1): TERM is forwarded to compassd, which is KILLed 5 s later
    # if still running; so this wait is bounded too.
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL - $1"
    shift
    for f in "$@"; do # show what the check looked at
        [ -f "$f" ] && sed -e 's/^/       | /' "$f" | head -40
    done
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

prefix=$tmp/prefix
log=$tmp/log
mkdir -p "$log"

# ---- 1. install ------------------------------------------------------------------------------
if timeout 120 cmake --install "$bin" --prefix "$prefix" >"$log/install.txt" 2>&1; then
    ok "cmake --install into a fresh prefix"
else
    fail "cmake --install into a fresh prefix" "$log/install.txt"
    finish
fi

# The .pc files land in <prefix>/${CMAKE_INSTALL_LIBDIR}/pkgconfig; find them rather than
# guessing the libdir ("lib", "lib64", "lib/x86_64-linux-gnu").
pcfile=$(find "$prefix" -name compass-plugin.pc -path '*/pkgconfig/*' | head -n 1)
if [ -n "$pcfile" ] && [ -f "$(dirname "$pcfile")/compass.pc" ]; then
    ok "compass.pc and compass-plugin.pc installed in ${pcfile#"$prefix"/}"
else
    fail "compass.pc and compass-plugin.pc installed" "$log/install.txt"
    finish
fi
pcdir=$(dirname "$pcfile")
libdir=$(dirname "$pcdir")
export PKG_CONFIG_PATH=$pcdir
# Only the temporary prefix: a compass installed system-wide must not satisfy the builds.
export PKG_CONFIG_LIBDIR=$pcdir

# The .pc files must point into the prefix they were installed into, or out-of-tree builds
# silently use another compass (or none). If they do not, carry on with pkg-config's
# --define-prefix (relocation from the .pc's own location) so the remaining checks still run.
pkgconfig=pkg-config
# Compared after resolving "..", so relocatable .pc files (prefix=${pcfiledir}/../..) pass.
flag_dirs() { # flag_dirs -I|-L WORDS...: the resolved directories given with that flag
    local flag=$1 w
    shift
    for w in "$@"; do
        [[ "$w" == "$flag"* ]] && realpath -m -- "${w#"$flag"}"
    done
}
cf=$(pkg-config --cflags compass-plugin 2>&1)
lf=$(pkg-config --libs compass 2>&1)
# shellcheck disable=SC2086 # split the flags into words
if flag_dirs -I $cf | grep -qxF "$(realpath -m -- "$prefix/include")" &&
        flag_dirs -L $lf | grep -qxF "$(realpath -m -- "$libdir")"; then
    ok "pkg-config paths point into the install prefix"
else
    echo "$cf" >"$log/pc.txt"
    echo "$lf" >>"$log/pc.txt"
    fail "pkg-config paths point into the install prefix ($prefix); got:" "$log/pc.txt"
    pkgconfig="pkg-config --define-prefix"
    echo "       continuing with PKG_CONFIG='$pkgconfig'"
fi

# ---- 2. the out-of-tree provider --------------------------------------------------------------
# Copied out of the tree first, so nothing can reach the compass sources by a relative path.
# Only the sources: a stale echo.so from an in-tree build must not be taken as up to date.
mkdir -p "$tmp/src/echo-provider" "$tmp/src/embed" "$tmp/plugins"
cp "$src"/sdk/examples/echo-provider/{echo.c,Makefile,CMakeLists.txt} "$tmp/src/echo-provider/"
cp "$src"/examples/embed/{embed.c,Makefile} "$tmp/src/embed/"
if timeout 60 make -C "$tmp/src/echo-provider" PKG_CONFIG="$pkgconfig" \
        >"$log/echo-build.txt" 2>&1 && [ -f "$tmp/src/echo-provider/echo.so" ]; then
    ok "echo.so builds out of tree through pkg-config compass-plugin"
    cp "$tmp/src/echo-provider/echo.so" "$tmp/plugins/echo.so"
else
    fail "echo.so builds out of tree through pkg-config compass-plugin" "$log/echo-build.txt"
    finish
fi
echo_so=$tmp/plugins/echo.so

# The same plugin through its CMakeLists.txt (pkg_check_modules), for teams that use CMake.
pc_argn=
[ "$pkgconfig" = pkg-config ] || pc_argn=-DPKG_CONFIG_ARGN=--define-prefix
if timeout 60 cmake -S "$tmp/src/echo-provider" -B "$tmp/echo-cmake" $pc_argn \
        >"$log/echo-cmake.txt" 2>&1 &&
        timeout 60 cmake --build "$tmp/echo-cmake" >>"$log/echo-cmake.txt" 2>&1 &&
        [ -f "$tmp/echo-cmake/echo.so" ]; then
    ok "echo.so also builds with its CMakeLists.txt through pkg_check_modules"
else
    fail "echo.so also builds with its CMakeLists.txt through pkg_check_modules" \
        "$log/echo-cmake.txt"
fi

nm -D --undefined-only "$echo_so" >"$log/nm-undef.txt" 2>&1
if ! awk '{print $NF}' "$log/nm-undef.txt" | grep -Eq '^(cps_|compass_engine)'; then
    ok "echo.so has no undefined references into the core"
else
    fail "echo.so has no undefined references into the core" "$log/nm-undef.txt"
fi

nm -D --defined-only "$echo_so" >"$log/nm-def.txt" 2>&1
# Every defined symbol but the linker's absolute version nodes (type A).
exports=$(awk 'NF == 3 && $2 != "A" {print $3}' "$log/nm-def.txt" | sort)
if [ -n "$exports" ] && ! echo "$exports" | grep -Ev '^compass_plugin_entry(_[a-z0-9_]+)?$' \
        | grep -q . && echo "$exports" | grep -qx compass_plugin_entry; then
    ok "echo.so exports only compass_plugin_entry* ($(paste -sd ' ' - <<<"$exports"))"
else
    fail "echo.so exports only compass_plugin_entry*" "$log/nm-def.txt"
fi

# ---- 3. the installed compassd serving the echo plugin ---------------------------------------
conf=$tmp/echo.conf
cat >"$conf" <<CONF
server = { listen = "127.0.0.1:0"; log_requests = false; drain_seconds = 5; };
plugins = { paths = [ "$tmp/plugins" ]; };
deployments = (
  { name = "echo-dep"; plugin = "echo"; models = [ "echo-1" ]; },
  { name = "echo-custom"; plugin = "echo"; models = [ "echo-2" ];
    options = { prefix = "rev> "; }; }
);
CONF

# timeout bounds compassd's life even if this script is killed; it forwards SIGTERM and
# passes compassd's exit status through.
portfile=$tmp/port
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    timeout -k 5 240 "$prefix/bin/compassd" --config "$conf" --listen 127.0.0.1:0 \
    --port-file "$portfile" \
    >"$log/compassd.txt" 2>&1 &
daemon_pid=$!
port=
for _ in $(seq $((wait_s * 10))); do
    if [ -s "$portfile" ]; then
        port=$(cat "$portfile")
        break
    fi
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ "$port" =~ ^[0-9]+$ ]]; then
    ok "installed compassd starts with the echo plugin (port $port)"
else
    fail "installed compassd starts with the echo plugin within ${wait_s}s" "$log/compassd.txt"
    finish
fi

url=http://127.0.0.1:$port/v1/chat/completions
post() { # post OUT HEADERS BODY
    curl -sS -m "$wait_s" -o "$1" -D "$2" -H 'content-type: application/json' \
        --data-binary "$3" "$url" 2>>"$log/curl.txt"
}

post "$log/plain.json" "$log/plain.hdr" \
    '{"model":"echo-1","messages":[{"role":"system","content":"be brief"},'\
'{"role":"user","content":"hello compass world"}]}'
if grep -q '"content":"echo: dlrow ssapmoc olleh"' "$log/plain.json"; then
    ok "plain reply is \"echo: \" + the reversed user message"
else
    fail "plain reply is \"echo: \" + the reversed user message" "$log/plain.hdr" "$log/plain.json"
fi
if grep -iq '^x-compass-provider: echo-dep' "$log/plain.hdr"; then
    ok "x-compass-provider names the echo deployment"
else
    fail "x-compass-provider names the echo deployment" "$log/plain.hdr"
fi

# Multi-byte UTF-8 characters are kept whole; the prefix option is honoured per deployment.
post "$log/utf8.json" "$log/utf8.hdr" \
    '{"model":"echo-2","messages":[{"role":"user","content":"h\u00e9llo w\u00f6rld"}]}'
if grep -q "\"content\":\"rev> dlröw olléh\"" "$log/utf8.json" &&
        grep -iq '^x-compass-provider: echo-custom' "$log/utf8.hdr"; then
    ok "option prefix is applied and UTF-8 characters survive the reversal"
else
    fail "option prefix is applied and UTF-8 characters survive the reversal" \
        "$log/utf8.hdr" "$log/utf8.json"
fi

post "$log/stream.txt" "$log/stream.hdr" \
    '{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"hello compass world"}]}'
last=$(grep -v '^[[:space:]]*$' "$log/stream.txt" | tail -n 1 | tr -d '\r')
if [ "$last" = "data: [DONE]" ]; then
    ok "streamed reply ends with data: [DONE]"
else
    fail "streamed reply ends with data: [DONE]" "$log/stream.hdr" "$log/stream.txt"
fi
if grep -q '"content":"echo: "' "$log/stream.txt" &&
        grep -q '"content":"dlrow "' "$log/stream.txt" &&
        grep -q '"content":"ssapmoc "' "$log/stream.txt" &&
        grep -q '"content":"olleh"' "$log/stream.txt" &&
        grep -q '"finish_reason":"stop"' "$log/stream.txt" &&
        grep -iq '^x-compass-provider: echo-dep' "$log/stream.hdr"; then
    ok "streamed reply has one delta per word and a finish"
else
    fail "streamed reply has one delta per word and a finish" "$log/stream.hdr" "$log/stream.txt"
fi

kill -TERM "$daemon_pid"
status=
for _ in $(seq $((wait_s * 10))); do
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        wait "$daemon_pid"
        status=$?
        break
    fi
    sleep 0.1
done
if [ -z "$status" ]; then
    fail "compassd stops on SIGTERM within ${wait_s}s" "$log/compassd.txt"
else
    daemon_pid=
    if [ "$status" -eq 0 ]; then
        ok "compassd exits 0 on SIGTERM"
    else
        fail "compassd exits 0 on SIGTERM (got $status)" "$log/compassd.txt"
    fi
fi

# ---- 4. a host program embedding the installed libcompass ------------------------------------
embed_ldflags=
if [ "${COMPASS_SANITIZE:-0}" = 1 ]; then
    embed_ldflags="-fsanitize=address,undefined" # libcompass itself is instrumented
fi
if timeout 60 make -C "$tmp/src/embed" PKG_CONFIG="$pkgconfig" LDFLAGS="$embed_ldflags" \
        >"$log/embed-build.txt" 2>&1 && [ -x "$tmp/src/embed/embed" ]; then
    ok "embed builds out of tree through pkg-config compass"
else
    fail "embed builds out of tree through pkg-config compass" "$log/embed-build.txt"
    finish
fi

mock_dir=$libdir/compass/plugins
econf=$tmp/embed.conf
cat >"$econf" <<CONF
plugins = { paths = [ "$mock_dir" ]; };
deployments = ( { name = "mock"; plugin = "mock"; models = [ "mock-1" ]; } );
CONF
if [ -f "$mock_dir/mock.so" ]; then
    ok "mock plugin installed in ${mock_dir#"$prefix"/}"
else
    fail "mock plugin installed in ${mock_dir#"$prefix"/}" "$log/install.txt"
fi

LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    timeout "$wait_s" "$tmp/src/embed/embed" "$econf" mock-1 "hello from embed" \
    >"$log/embed.txt" 2>"$log/embed-stderr.txt"
rc=$?
if [ "$rc" -eq 0 ]; then
    ok "embed exits 0"
else
    fail "embed exits 0 (got $rc)" "$log/embed.txt" "$log/embed-stderr.txt"
fi
if grep -qx 'chat: status 200' "$log/embed.txt" &&
        grep -qx 'chat: content: mock reply to: hello from embed' "$log/embed.txt"; then
    ok "embed: plain call answers 200 with the mock's reply"
else
    fail "embed: plain call answers 200 with the mock's reply" "$log/embed.txt"
fi
if grep -qx 'stream: status 200' "$log/embed.txt" &&
        grep -qx 'stream: content: mock reply to: hello from embed' "$log/embed.txt" &&
        grep -q '^stream: deltas: mock |reply |' "$log/embed.txt"; then
    ok "embed: streamed call answers 200, delta by delta, with the mock's reply"
else
    fail "embed: streamed call answers 200, delta by delta, with the mock's reply" \
        "$log/embed.txt"
fi

finish
