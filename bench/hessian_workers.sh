#!/bin/sh
# Hessian estimation through the coordinator with 1 and with 2 local
# workers (issue: distributed estimation). The job computes full Hessians
# over SEQS calibration sequences (one "hessian" task per 8 sequences), then
# measures one format per tensor, so the Hessian stage dominates. Prints
# wall times and the speed-up ratio T(1 worker) / T(2 workers), measured in
# the same run.
#
#   bench/hessian_workers.sh [BITPLAN]        (SEQS=512 by default)
set -eu
B=${1:-build/bitplan}
M=examples/models/tiny-llama-kjv
SEQS=${SEQS:-512}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
run() { # workers -> seconds
    rm -f "$TMP"/bitplan-stats-*.st
    start=$(date +%s.%N)
    TMPDIR=$TMP $B plan --quiet --workers "$1" --model $M --budget-bits 8.5 --formats int8_pc_sym \
        --metric hdiag --text $M/calib.txt --ctx 128 --calib-seqs "$SEQS" --out "$TMP/p$1.json" >/dev/null
    end=$(date +%s.%N)
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }'
}
t1=$(run 1)
t2=$(run 2)
cmp -s "$TMP/p1.json" "$TMP/p2.json" && same=identical || same=DIFFERENT
echo "hessian stage (+ small measure): 1 worker ${t1} s, 2 workers ${t2} s, speed-up $(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.2f", a / b }'), plans $same"
