#!/bin/sh
# Quality table for the calibration issue: delta NLL on eval.txt of plans
# made with every metric, on RTN and on GPTQ weights, at several budgets,
# next to uniform formats.
#
#   bench/quality.sh [BITPLAN] [OUTDIR]
#
# BITPLAN defaults to build/bitplan; OUTDIR (default bench/out-quality)
# keeps plans, tables and eval JSON. Prints a Markdown table on stdout.
# Environment: SEQS (Hessian sequences, default 256), KLW (KL windows for
# dkl, default 16), BUDGETS (default "3.0 3.25 3.5 4.0").
# Slow: a dkl table costs one forward pass per (tensor, format) cell.
set -eu
B=${1:-build/bitplan}
OUT=${2:-bench/out-quality}
M=examples/models/tiny-llama-kjv
SEQS=${SEQS:-256}
KLW=${KLW:-16}
BUDGETS=${BUDGETS:-"3.0 3.25 3.5 4.0"}
CAL="--text $M/calib.txt --ctx 128 --calib-seqs $SEQS"
mkdir -p "$OUT"
# The menu: every integer width, group and sign, with the clipping search.
INT=$(for b in 2 3 4 5 6 8; do for g in g32 g64 g128 pc; do for s in sym asym; do
      printf "int%s_%s_%s," "$b" "$g" "$s"; done; done; done | sed 's/,$//')
STATS="$OUT/stats.st"

NLL_FP=$($B eval --quiet --json --model $M --text $M/eval.txt | sed 's/.*"nll": \([-0-9.e]*\).*/\1/')

dnll() { # plan -> delta NLL (quantized NLL minus full-precision NLL)
    $B eval --quiet --json --no-kl --model $M --text $M/eval.txt --plan "$1" --calib-text $M/calib.txt \
        --calib-ctx 128 --calib-seqs $SEQS > "$1.eval.json"
    nll=$(sed 's/.*"nll": \([-0-9.e]*\).*/\1/' "$1.eval.json")
    awk -v a="$nll" -v b="$NLL_FP" 'BEGIN { printf "%.4f", a - b }'
}

row() { # label metric method
    label=$1; metric=$2; method=$3
    table="$OUT/table-$metric-$method.csv"
    line="| $label |"
    for b in $BUDGETS; do
        p="$OUT/plan-$metric-$method-$b.json"
        $B plan --quiet --workers 0 --model $M --budget-bits "$b" --metric "$metric" --method "$method" \
            --formats "$INT" $CAL --stats "$STATS" --kl-windows $KLW --table "$table" --out "$p" >/dev/null
        line="$line $(dnll "$p") |"
    done
    echo "$line"
}

uniform() { # format method
    p="$OUT/uniform-$1-$2.json"
    $B plan --quiet --workers 0 --model $M --budget-bits 16 --formats "$1" --metric mse --method "$2" \
        $CAL --stats "$STATS" --out "$p" >/dev/null
    bits=$(sed -n 's/.*"bits": \([0-9.]*\).*/\1/p' "$p" | tail -1)
    echo "| uniform $1, $2 weights | $bits | $(dnll "$p") |"
}

echo "full-precision NLL: $NLL_FP nats/byte"
echo
echo "| uniform format | bits/weight | delta NLL |"
echo "|---|---|---|"
uniform int3_g128_asym rtn
uniform int3_g128_asym gptq
uniform int4_g128_asym gptq
echo
echo "| plan (metric, weights) | $(echo $BUDGETS | sed 's/ / | /g') |"
echo "|---|$(for b in $BUDGETS; do printf -- '---|'; done)"
for metric in mse hdiag hfull dkl; do
    for method in rtn gptq; do
        row "$metric, $method" $metric $method
    done
done
row "gptq (= hfull of GPTQ weights), gptq" gptq gptq
