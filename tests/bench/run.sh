#!/usr/bin/env bash
# run.sh - builds a Release tree without sanitizers in build/bench and runs
# every bench_* program found there, printing their figures.
#
#   tests/bench/run.sh            build and run all benchmarks
#   tests/bench/run.sh rpc        only bench_rpc (names are matched as
#                                 bench_<arg>)
#   BENCH_ARGS="-n 5000" tests/bench/run.sh   extra arguments for each
#   tests/bench/run.sh scale      bench_scale (100,000 agents by default; long:
#                                 only when named; see docs/SCALE.md)
#   TL_PERF_DIR=/tmp/p BENCH_BUILD_TYPE=RelWithDebInfo tests/bench/run.sh offer
#                                 profile the broker with perf during the
#                                 measurement (bench_offer: offer.data;
#                                 bench_scale: list.data, restart.data), read
#                                 with `perf report -i /tmp/p/offer.data
#                                 --tid PID` (PID: printed, the event loop)
#
# Benchmarks are bounded in count and time by themselves and only use
# loopback addresses.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
build=$src/build/bench
jobs=${BENCH_JOBS:-2}

cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE="${BENCH_BUILD_TYPE:-Release}" \
    -DRABROKER_TESTS=ON \
    -DRABROKER_SANITIZE=OFF -DRABROKER_FUZZ=OFF -DRABROKER_WERROR=OFF \
    >/dev/null
targets=()
for f in "$src"/tests/bench/bench_*.c; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .c)
    if [ $# -gt 0 ]; then
        want=0
        for a in "$@"; do [ "$n" = "bench_$a" ] && want=1; done
        [ $want = 1 ] || continue
    elif [ "$n" = bench_scale ]; then
        continue
    fi
    targets+=("$n")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "run.sh: no benchmark selected" >&2
    exit 1
fi
# Benchmarks that start the real daemon (bench_offer...) need rabrokerd too.
cmake --build "$build" -j"$jobs" --target "${targets[@]}" rabrokerd >/dev/null

# Each connection in one process costs two descriptors (client + server).
hard=$(ulimit -Hn)
want=16384
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want=$hard; fi
# Soft limit only: bench_scale raises its own up to the hard one.
ulimit -Sn "$want" 2>/dev/null || true

export RABROKER_SOURCE_DIR=$src RABROKER_BUILD_DIR=$build
status=0
for n in "${targets[@]}"; do
    bin=$(find "$build" -type f -name "$n" -perm -u+x | head -n 1)
    echo "==== $n ($(date -u +%FT%TZ), $(nproc) CPUs, ulimit -n $(ulimit -n))"
    limit=600
    if [ "$n" = bench_scale ]; then
        # It raises its own descriptor limits (as root); the listen
        # backlog needs somaxconn (docs/SCALE.md).
        limit=${BENCH_SCALE_TIMEOUT:-10800}
        if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/net/core/somaxconn)" -lt 4096 ]; then
            sysctl -qw net.core.somaxconn=4096 || true
        fi
    fi
    # shellcheck disable=SC2086
    if ! timeout "$limit" "$bin" ${BENCH_ARGS:-}; then
        echo "==== $n FAILED" >&2
        status=1
    fi
    echo
done
exit $status
