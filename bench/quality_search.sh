#!/bin/sh
# Issue 5's quality bars on the bundled model: delta NLL on eval.txt of
#   - the per-tensor ILP plan (dkl on GPTQ weights, --search ilp),
#   - the block-level ILP plan (rows blocks, same metric),
#   - the default search (the real-loss (1+lambda) search seeded with the
#     per-tensor ILP plan, returning the best measured of it, the ILP plan
#     and every fitting uniform plan),
#   - the same default search at block granularity (seeded with the block
#     ILP plan),
# at 3.0 and 3.5 average bits, next to the uniform GPTQ plans.
#
#   bench/quality_search.sh [BITPLAN] [OUTDIR]
#
# One measurement (granularity block: the table holds the whole-tensor
# cells and the block cells) serves every plan. Environment: SEQS (Hessian
# sequences, default 256), KLW (dkl windows, default 16), BLOCK (rows per
# block, default 32), GENS / LAMBDA / EVOW (search generations, offspring,
# high-fidelity windows; default 30 / 8 / 64), BUDGETS (default "3.0 3.5"),
# WORKERS (default 2), METHOD (gptq or gptq_act, default gptq), WIDTHS (the
# integer widths of the format menu, default "2 3 4 5 6 8": every group size,
# sym and asym). Prints a Markdown table; each step's wall time goes to
# OUTDIR/times.txt.
set -eu
B=${1:-build/bitplan}
OUT=${2:-bench/out-quality-search}
M=examples/models/tiny-llama-kjv
SEQS=${SEQS:-256}
KLW=${KLW:-16}
BLOCK=${BLOCK:-32}
GENS=${GENS:-30}
LAMBDA=${LAMBDA:-8}
EVOW=${EVOW:-64}
BUDGETS=${BUDGETS:-"3.0 3.5"}
WORKERS=${WORKERS:-2}
METHOD=${METHOD:-gptq}
WIDTHS=${WIDTHS:-"2 3 4 5 6 8"}
mkdir -p "$OUT"
INT=$(for b in $WIDTHS; do for g in g32 g64 g128 pc; do for s in sym asym; do
      printf "int%s_%s_%s," "$b" "$g" "$s"; done; done; done | sed 's/,$//')
CAL="--text $M/calib.txt --ctx 128 --calib-seqs $SEQS --stats $OUT/stats.st --kl-windows $KLW"
COMMON="--quiet --workers $WORKERS --model $M --metric dkl --method $METHOD --formats $INT $CAL --table $OUT/table.csv"

NLL_FP=$($B eval --quiet --json --model $M --text $M/eval.txt | sed 's/.*"nll": \([-0-9.e]*\).*/\1/')
dnll() {
    $B eval --quiet --json --no-kl --model $M --text $M/eval.txt --plan "$1" --calib-text $M/calib.txt \
        --calib-ctx 128 --calib-seqs $SEQS > "$1.eval.json"
    nll=$(sed 's/.*"nll": \([-0-9.e]*\).*/\1/' "$1.eval.json")
    awk -v a="$nll" -v b="$NLL_FP" 'BEGIN { printf "%.5f", a - b }'
}
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['search']; print(eval(sys.argv[2]))" "$@"; }

stamp() { echo "$(date -u +%H:%M:%S) $*" >> "$OUT/times.txt"; }
# Measure once (block cells and whole-tensor cells), no search.
stamp "measure start"
$B plan $COMMON --budget-bits 3.0 --granularity block --block-axis rows --block-size $BLOCK --search ilp \
    --out "$OUT/measure.json" >/dev/null
stamp "measure done"

echo "full-precision NLL: $NLL_FP nats/byte"
echo
echo "| plan | bits | delta NLL (eval.txt) | KL on $EVOW held-out calib windows |"
echo "|---|---|---|---|"
p="$OUT/uniform-int3.json"
$B plan --quiet --model $M --formats int3_g128_asym --budget-bits 3.25 --metric mse --method $METHOD \
    --text $M/calib.txt --ctx 128 --calib-seqs $SEQS --stats $OUT/stats.st --search ilp --out "$p" >/dev/null
echo "| uniform int3_g128_asym ($METHOD) | 3.25 | $(dnll "$p") | - |"
for b in $BUDGETS; do
    p="$OUT/ilp-$b.json"
    $B plan $COMMON --budget-bits "$b" --search ilp --out "$p" >/dev/null
    echo "| per-tensor ILP (dkl, GPTQ) | $b | $(dnll "$p") | - |"
    p="$OUT/block-$b.json"
    $B plan $COMMON --budget-bits "$b" --granularity block --block-axis rows --block-size $BLOCK \
        --evo-generations 0 --evo-windows $EVOW --out "$p" >/dev/null
    echo "| block ILP (rows of $BLOCK, dkl apportioned by gptq) | $b | $(dnll "$p") | $(field "$p" "r['real_loss']['ilp_kl']") |"
    p="$OUT/evo-$b.json"
    $B plan $COMMON --budget-bits "$b" --evo-generations $GENS --evo-lambda $LAMBDA --evo-windows $EVOW \
        --out "$p" >/dev/null
    stamp "evo $b done"
    echo "| default search (evo from the per-tensor ILP; returned: $(field "$p" "r['real_loss']['returned']")) | $b | $(dnll "$p") | $(field "$p" "r['real_loss']['returned_kl']") (ILP seed $(field "$p" "r['real_loss']['ilp_kl']"), $(field "$p" "r['real_loss']['search']['evaluations_run']") evaluations) |"
    p="$OUT/blockevo-$b.json"
    $B plan $COMMON --budget-bits "$b" --granularity block --block-axis rows --block-size $BLOCK \
        --evo-generations $GENS --evo-lambda $LAMBDA --evo-windows $EVOW --out "$p" >/dev/null
    stamp "block evo $b done"
    echo "| default search at block granularity (evo from the block ILP; returned: $(field "$p" "r['real_loss']['returned']")) | $b | $(dnll "$p") | $(field "$p" "r['real_loss']['returned_kl']") (ILP seed $(field "$p" "r['real_loss']['ilp_kl']"), $(field "$p" "r['real_loss']['search']['evaluations_run']") evaluations) |"
done
