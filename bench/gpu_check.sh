#!/usr/bin/env bash
# One-command device check (bench/gpu_check.py): device-parametrised tests, CPU ↔ device logits,
# owt-small training (bf16, compile), scoring an imported checkpoint, sampling 4 × 1,024 tokens.
# About 8 minutes on one GPU; exits 1 on any failure.
#   bash bench/gpu_check.sh                          # CUDA
#   bash bench/gpu_check.sh --device cpu --quick     # the CPU half (toy sizes)
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 900 python bench/gpu_check.py "$@"
