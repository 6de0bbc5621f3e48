#!/bin/sh
# Hessian estimation through the coordinator daemon with 1 and with 2
# workers of one OpenMP thread each (issue: distributed estimation). The job
# computes full Hessians over SEQS calibration sequences (8 "hessian"
# shards), then measures one format per tensor and solves, so the Hessian
# stage dominates. Prints wall times (submit to done) and the speed-up
# T(1 worker) / T(2 workers), measured in the same run, and checks that the
# plans are identical.
#
#   bench/hessian_workers.sh [BITPLAN]        (SEQS=512 by default)
set -eu
B=$(realpath "${1:-build/bitplan}")
M=$(realpath examples/models/tiny-llama-kjv)
SEQS=${SEQS:-512}
PORT=${PORT:-27950}
TMP=$(mktemp -d)
PIDS=""
cleanup() { for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
cat > "$TMP/job.json" <<JSON
{"kind": "plan", "model": "$M", "budget": {"bits": 8.5}, "formats": ["int8_pc_sym"],
 "metric": "hdiag", "calibration": {"text": "$M/calib.txt", "ctx": 128, "seqs": $SEQS}}
JSON
run() { # workers -> seconds in $TMP/t$n (no subshell, so PIDS is kept)
    n=$1; port=$((PORT + 10 * n))
    rm -f "$TMP"/bitplan-stats-*.st
    TMPDIR=$TMP $B serve --bind tcp://127.0.0.1:$port --workers-bind tcp://127.0.0.1:$((port + 1)) \
        --state "$TMP/state$n" >"$TMP/serve$n.log" 2>&1 &
    PIDS="$PIDS $!"
    i=0
    while [ $i -lt "$n" ]; do
        OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE TMPDIR=$TMP $B worker --quiet --threads 1 \
            --connect tcp://127.0.0.1:$((port + 1)) >"$TMP/worker$n-$i.log" 2>&1 &
        PIDS="$PIDS $!"
        i=$((i + 1))
    done
    sleep 1
    start=$(date +%s.%N)
    id=$($B submit "$TMP/job.json" --connect tcp://127.0.0.1:$port)
    $B status "$id" --wait --connect tcp://127.0.0.1:$port >/dev/null
    end=$(date +%s.%N)
    $B result "$id" --connect tcp://127.0.0.1:$port >"$TMP/plan$n.json"
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }' >"$TMP/t$n"
    for p in $PIDS; do kill -9 "$p" 2>/dev/null || true; done
    PIDS=""
}
run 1
run 2
t1=$(cat "$TMP/t1")
t2=$(cat "$TMP/t2")
cmp -s "$TMP/plan1.json" "$TMP/plan2.json" && same=identical || same=DIFFERENT
echo "Hessian job ($SEQS x 128 tokens): 1 worker ${t1} s, 2 workers ${t2} s," \
     "speed-up $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", a / b }'), plans $same"
