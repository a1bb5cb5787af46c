#!/bin/bash
# The CLI outputs a refactor must keep: JSON of zoo models (eval, train, amp, meta, fits) and the text renderers.
# usage: benchmarks/cli_snapshot.sh OUTDIR   (compare two trees: run once per tree, PYTHONPATH=<tree>/src for the
# other one, then diff the folders; drop new optional JSON keys before comparing)
out=$(realpath -m "$1"); mkdir -p "$out"; cd "$(dirname "$0")/.."
T=.venv/bin/torchcost
run() { name=$1; shift; $T "$@" --format json -o $out/$name.json 2> $out/$name.err; echo "$name rc=$?" >> $out/rc.txt; }
: > $out/rc.txt
for e in simple_cnn conv1d_series conv3d_action standard_conv depthwise_separable; do run ex_$e example:$e; run ex_${e}_train example:$e --train; done
run r18 torchvision:resnet18
run r18_train torchvision:resnet18 --train --optimizer sgd
run mbv2 torchvision:mobilenet_v2
run vit torchvision:vit_b_16 --meta
run swin torchvision:swin_t --meta
run r3d torchvision:r3d_18 --meta
run timm_r18 timm:resnet18
run timm_vit timm:vit_tiny_patch16_224
run gpt2 hf:gpt2 --config n_layer=2 --seq-len 64
run gpt2_train hf:gpt2 --config n_layer=2 --seq-len 64 --train
run gpt2_amp hf:gpt2 --config n_layer=2 --seq-len 64 --train --amp bf16
run llama70 hf:llama-3-70b --meta
run mixtral hf:mixtral-8x7b --meta --config num_hidden_layers=2
run fit example:simple_cnn --memory-budget 2GiB
run fit_train example:simple_cnn --memory-budget 8GiB --train
$T example:simple_cnn > $out/table_simple.txt 2>&1
$T torchvision:resnet18 --format markdown > $out/r18.md 2>&1
$T torchvision:resnet18 --format csv > $out/r18.csv 2>&1
$T timm:resnet18 --sort flops --top 5 > $out/top5.txt 2>&1
$T compare standard_conv depthwise_separable > $out/compare.txt 2>&1
$T compare standard_conv depthwise_separable --format json > $out/compare.json 2>&1
$T torchvision:resnet18 --memory-budget 4GiB > $out/fit_table.txt 2>&1
