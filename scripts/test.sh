#!/usr/bin/env bash
# Installs dependencies, builds compass with -Werror and runs every test: once normally, once
# under AddressSanitizer+UndefinedBehaviorSanitizer, and compassd's request path under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/deps.sh
jobs=$(nproc)

echo "== build (RelWithDebInfo, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMPASS_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
echo "== tests"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== build (ASan+UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCOMPASS_WERROR=ON -DCOMPASS_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under ASan+UBSan"
# the install test re-builds out of tree with the system toolchain; it runs in the plain pass
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j"$jobs" -E '^install$')

echo "== valgrind: compassd request path"
scripts/valgrind-check.sh build
echo "== all tests passed"
