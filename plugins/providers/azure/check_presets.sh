#!/usr/bin/env bash
# Checks every etc/presets/*.conf the way an operator uses it: pasted into the deployments
# list of a config, validated by `compassd --check-config` against the plugins just built.
# usage: check_presets.sh /path/to/compassd /path/to/plugin/dir /path/to/etc/presets
# Each api_key_env a preset names is set to a dummy value so the deployment is enabled and its
# options reach the plugin's instance_new (a disabled deployment's options are not checked).
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -u
COMPASSD=${1:?usage: check_presets.sh COMPASSD PLUGIN_DIR PRESETS_DIR}
PLUGINS=${2:?usage: check_presets.sh COMPASSD PLUGIN_DIR PRESETS_DIR}
PRESETS=${3:?usage: check_presets.sh COMPASSD PLUGIN_DIR PRESETS_DIR}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $1${2:+: $2}"; }

# config FILE PRESET... : a config whose deployments list holds the presets, comma-separated
config() {
    local out=$1 first=1 p
    shift
    {
        printf 'plugins = { paths = [ "%s" ]; };\n' "$PLUGINS"
        printf 'deployments = (\n'
        for p in "$@"; do
            [ $first = 1 ] || printf ',\n'
            first=0
            cat "$p"
        done
        printf ');\n'
    } >"$out"
}

# check NAME CONFIG: compassd --check-config with every api_key_env of the config set
check() {
    local name=$1 conf=$2 envs out var
    envs=()
    for var in $(sed -n 's/^[^#]*api_key_env *= *"\([A-Za-z_][A-Za-z0-9_]*\)".*/\1/p' "$conf"); do
        envs+=("$var=preset-check-dummy-key")
    done
    if out=$(env "${envs[@]}" "$COMPASSD" --check-config "$conf" 2>&1) &&
        grep -q "configuration OK" <<<"$out"; then
        ok "$name"
    else
        bad "$name" "$(grep -v '"level":"info"' <<<"$out" | tail -3)"
    fi
}

shopt -s nullglob
files=("$PRESETS"/*.conf)
if [ ${#files[@]} -lt 10 ]; then
    bad "presets present" "expected at least 10 in $PRESETS, found ${#files[@]}"
fi
for f in "${files[@]}"; do
    n=$(basename "$f" .conf)
    if ! head -1 "$f" | grep -q '^#'; then
        bad "$n: starts with a comment saying what it is for"
    fi
    config "$TMP/$n.conf" "$f"
    check "$n: compassd --check-config" "$TMP/$n.conf"
done

# all of them pasted into one list: names stay unique, the comma pasting works
config "$TMP/all.conf" "${files[@]}"
check "all presets in one config" "$TMP/all.conf"

# the check has teeth: a preset with an unknown option must be refused with file:line
sed 's/^  plugin = "openai";/  plugin = "openai";\n  options = { no_such_option = 1; };/' \
    "$PRESETS/vllm.conf" >"$TMP/typo.preset"
config "$TMP/typo.conf" "$TMP/typo.preset"
if out=$(VLLM_API_KEY=x "$COMPASSD" --check-config "$TMP/typo.conf" 2>&1); then
    bad "an unknown option is refused" "compassd accepted it"
elif grep -q "typo.conf:[0-9]*:.*no_such_option" <<<"$out"; then
    ok "an unknown option is refused with file:line"
else
    bad "an unknown option is refused with file:line" "$(tail -2 <<<"$out")"
fi

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
