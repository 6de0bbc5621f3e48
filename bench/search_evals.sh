#!/bin/sh
# Real-loss search throughput: evaluations per second of candidate plans
# through the embedded coordinator with 1 and with 2 workers, in the same
# run (issue 5, "Real-loss search on the shared model: evaluations per
# second with 1 and with 2 workers").
#
#   bench/search_evals.sh [BITPLAN] [OUTDIR]
#
# A first run measures the sensitivity table and the Hessians; the timed
# runs reuse both, so they time the ILP solve (milliseconds) and the search:
# evaluate tasks, one per candidate plan. The plans of both runs must be
# byte-identical (checked). Environment: GENS (default 6), LAMBDA (default
# 6), WINDOWS (default 32), METRIC (default gptq), BITS (default 3.0).
set -eu
B=${1:-build/bitplan}
OUT=${2:-bench/out-search}
M=examples/models/tiny-llama-kjv
GENS=${GENS:-6}
LAMBDA=${LAMBDA:-6}
WINDOWS=${WINDOWS:-32}
METRIC=${METRIC:-gptq}
BITS=${BITS:-3.0}
mkdir -p "$OUT"
FMTS=int2_g64_asym,int3_g64_asym,int3_g128_asym,int3_pc_asym,int4_g64_asym,int4_g128_asym
COMMON="--quiet --model $M --budget-bits $BITS --metric $METRIC --formats $FMTS \
 --text $M/calib.txt --ctx 128 --calib-seqs 64 --stats $OUT/stats.st --table $OUT/table.csv \
 --evo-generations $GENS --evo-lambda $LAMBDA --evo-windows $WINDOWS"

# Warm-up: measure the table (and the Hessians), no search.
$B plan $COMMON --search ilp --workers 2 --out "$OUT/ilp.json" >/dev/null

now() { date +%s.%N; }
for w in 1 2; do
    t0=$(now)
    $B plan $COMMON --workers $w --out "$OUT/evo-w$w.json" >/dev/null
    t1=$(now)
    n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['search']['real_loss']['search']['evaluations_run'])" "$OUT/evo-w$w.json")
    awk -v w=$w -v n=$n -v a=$t0 -v b=$t1 'BEGIN { printf "workers %d: %d evaluations in %.2f s = %.2f evaluations/s\n", w, n, b - a, n / (b - a) }' | tee "$OUT/rate-w$w.txt"
done
cmp "$OUT/evo-w1.json" "$OUT/evo-w2.json" && echo "plans byte-identical"
r1=$(awk '{print $(NF-1)}' "$OUT/rate-w1.txt")
r2=$(awk '{print $(NF-1)}' "$OUT/rate-w2.txt")
awk -v a=$r1 -v b=$r2 'BEGIN { printf "speed-up 2 vs 1 worker: %.2fx\n", b / a }'
