#!/bin/sh
# Build and run the proto decoder fuzz harness with AFL++ (not part of CI).
#
#   tests/proto/fuzz_afl.sh [SECONDS]        default 300
#
# Needs afl++ (Debian: apt-get install -y afl++, which pulls in clang-14).
# Output goes to $BP_FUZZ_OUT (default build-fuzz/ in the source tree):
#   fuzz_proto_decode          the instrumented harness (ASan, persistent mode)
#   findings/default/crashes   inputs that crashed; minimise each with
#       afl-tmin -i CRASH -o tests/proto/corpus/crash-<what> -- build-fuzz/fuzz_proto_decode
#     fix the bug, and commit the minimised file: the replay test (CTest
#     fuzz_proto_replay) then runs it forever after.
#
# The same source builds for libFuzzer instead:
#   clang-14 -std=c11 -D_GNU_SOURCE -DBP_FUZZING -g -O1 \
#     -fsanitize=fuzzer,address,undefined -Iinclude tests/proto/fuzz_proto_decode.c \
#     proto/*.c common/error.c -lmsgpackc -lzmq -lsodium -lm -o fuzz_proto_decode
#   ./fuzz_proto_decode -max_total_time=300 corpus-work/ tests/proto/corpus/
#
# To regenerate the seed corpus after a protocol change (build bp_proto first):
#   cc -std=c11 -D_GNU_SOURCE -Iinclude tests/proto/fuzz_gen_corpus.c \
#     build/libbp_proto.a build/libbp_common.a -lmsgpackc -lzmq -lsodium -lm -o gen
#   ./gen tests/proto/corpus
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${BP_FUZZ_OUT:-$ROOT/build-fuzz}
SECS=${1:-300}

if ! command -v afl-clang-fast >/dev/null 2>&1; then
    echo "afl-clang-fast not found: apt-get install -y afl++" >&2
    exit 1
fi
mkdir -p "$OUT"

# -fsanitize=fuzzer with afl-clang-fast links AFL++'s libFuzzer-compatible
# driver (persistent, in-memory); BP_FUZZING drops the replay main().
AFL_USE_ASAN=1 afl-clang-fast -std=c11 -D_GNU_SOURCE -DBP_FUZZING -g -O1 \
    -fsanitize=fuzzer -I"$ROOT/include" \
    "$ROOT/tests/proto/fuzz_proto_decode.c" "$ROOT"/proto/*.c "$ROOT/common/error.c" \
    -lmsgpackc -lzmq -lsodium -lm -o "$OUT/fuzz_proto_decode"

# Resume if findings/ exists, else start from the seeds.
IN="$ROOT/tests/proto/corpus"
if [ -d "$OUT/findings/default/queue" ]; then IN=-; fi

AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
    afl-fuzz -V "$SECS" -i "$IN" -o "$OUT/findings" -- "$OUT/fuzz_proto_decode"

echo "crashes:"
ls "$OUT/findings/default/crashes" 2>/dev/null | grep -v README || echo "  none"
