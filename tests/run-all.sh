#!/usr/bin/env bash
# The test command: installs the Debian packages, builds with clang,
# warnings as errors, AddressSanitizer + UndefinedBehaviorSanitizer and the
# libFuzzer harnesses, then runs every test (unit, integration against a real
# slapd and real daemons, bounded fuzzing, format check) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
build=build/test
cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DRABROKER_WERROR=ON -DRABROKER_SANITIZE=ON -DRABROKER_FUZZ=ON \
    -DRABROKER_FUZZ_SECONDS="${RABROKER_FUZZ_SECONDS:-30}"
cmake --build "$build" -j"$(nproc)"
cd "$build"
ctest --output-on-failure -j"$(nproc)" --timeout 900
