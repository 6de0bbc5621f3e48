#!/bin/sh
# Install, build, and plan the bundled example model at 3.5 bits per weight.
set -eu
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
./build/bitplan plan --model examples/models/tiny-llama-kjv --budget-bits 3.5 \
    --out plan.json
