#!/bin/bash
# Wall time and max RSS of serving commands as a user types them, and their JSON, for docs/benchmarks.md (round 16).
# usage: benchmarks/serve_cli.sh OUTDIR [--big]   (--big adds the llama-3-8b --max-batch search: minutes before
# round 16, 16.7 GB of RAM). To compare two trees: run once per tree with PYTHONPATH=<tree>/src, then
# cmp OUTDIR_A/N.json OUTDIR_B/N.json.
out=$(realpath -m "$1"); mkdir -p "$out"; cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
commands=(
  "hf:gpt2 --prompt-len 64 --new-tokens 16"
  "hf:gpt2 --prompt-len 64 --new-tokens 16 --batch-size 4 --target cuda"
  "hf:llama-3-8b --config num_hidden_layers=2 --prompt-len 512 --new-tokens 32"
  "hf:llama-3-8b --config num_hidden_layers=2 --new-tokens 8 --memory-budget 4GiB --max-context"
  "hf:gemma-2-9b --config num_hidden_layers=2 --prompt-len 300 --new-tokens 8 --memory-budget 16GiB --max-batch"
  "hf:mixtral-8x7b --config num_hidden_layers=1 --prompt-len 64 --new-tokens 4 --dtype float32"
  "hf:llama-3-8b --config num_hidden_layers=2 --prompt-len 64 --new-tokens 4 --tp 2"
)
[ "$2" = "--big" ] && commands+=("hf:llama-3-8b --prompt-len 2048 --new-tokens 128 --memory-budget 80GiB --max-batch")
i=0
for c in "${commands[@]}"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  /usr/bin/time -f "%e s wall, %M KB max RSS" "$PY" -m torchcost $c --format json --no-progress > "$out/$i.json" 2> "$out/$i.err"
  echo "$i rc=$? $(tail -1 "$out/$i.err") :: torchcost $c"
done
