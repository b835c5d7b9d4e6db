#!/usr/bin/env bash
# Installs dependencies, builds compass and starts compassd in the foreground on
# etc/compassd.conf (127.0.0.1:8080). With no API keys set it answers with the bundled mock
# provider; export OPENAI_API_KEY / ANTHROPIC_API_KEY / GEMINI_API_KEY for real providers.
# Extra arguments go to compassd (e.g. --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMPASS_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"
exec build/compassd --config etc/compassd.conf "$@"
