#!/usr/bin/env bash
# run-fuzzer.sh FUZZER SEED_CORPUS SECONDS
# Runs a libFuzzer binary for a bounded time on a scratch copy of its seed
# corpus (the repository's corpus is never written to). Any crash, leak or
# sanitizer report fails the test and leaves the reproducer in the scratch
# directory, whose path is printed.
set -euo pipefail
fuzzer=$1 seeds=$2 secs=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/rabroker-fuzz.XXXXXX")
mkdir -p "$work/corpus"
cp -r "$seeds"/. "$work/corpus/" 2>/dev/null || true
echo "fuzzing $(basename "$fuzzer") for ${secs}s in $work"
cd "$work"
"$fuzzer" -max_total_time="$secs" -max_len=70000 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 corpus
rm -rf "$work"
