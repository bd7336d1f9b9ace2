#!/usr/bin/env bash
# The checks to run where a GPU can be had: the pipeline on CUDA twice (are the results bitwise
# identical?), with a CNN too, the error for an absent device, the training benchmark (MLPs and
# CNNs, the tutorial loop against the in-memory one and its CUDA-graph capture), and the unit
# tests that have a CUDA case. Usage: bash benchmarks/gpu_check.sh MIRROR_DIR [DEVICE]
# (MIRROR_DIR holds the four MNIST .gz files; DEVICE defaults to cuda).
set -u
export PYTHONUNBUFFERED=1
mirror=$(cd "${1:?usage: gpu_check.sh MIRROR_DIR [DEVICE]}" && pwd)
device=${2:-cuda}
work=$(mktemp -d)
python=${PYTHON:-python3}

nvidia-smi -L 2>/dev/null
$python - "$work" "$device" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["device"] = sys.argv[2]
yaml.safe_dump(params, open(f"{sys.argv[1]}/params.yaml", "w"))
recipe = params["grid"]["recipes"]["cnn_small"]  # the grid's recipe, as the single configuration
params.update(arch=recipe["arch"], optimizer=recipe["optimizer"], schedule=recipe["schedule"])
params["train"].update(recipe["train"])
yaml.safe_dump(params, open(f"{sys.argv[1]}/cnn.yaml", "w"))
params["device"] = "cuda:7"
yaml.safe_dump(params, open(f"{sys.argv[1]}/absent.yaml", "w"))
PY
MNIST_MIRRORS="file://$mirror" $python -m stages.download --params "$work/params.yaml" --out "$work/raw"
$python -m stages.split --params "$work/params.yaml" --raw "$work/raw" --out "$work/split" --samples "$work/samples.png"

run() {  # run NAME PARAMS: train and evaluate into $work/NAME.*
  local name=$1 params=$2
  $python -m stages.train --params "$params" --split "$work/split" --model "$work/$name.pt" \
    --metrics "$work/$name.train.json" --curves "$work/$name.loss.csv" --curves-figure "$work/$name.curves.png" \
    --summary "$work/$name.summary.txt" --log "$work/$name.log.json" --checkpoint "$work/$name.ckpt" |
    grep -E "numerics|Epoch : 1/|kept"
  $python -m stages.evaluate --params "$params" --split "$work/split" --model "$work/$name.pt" \
    --metrics "$work/$name.evaluate.json" --confusion "$work/$name.confusion.csv" \
    --confusion-figure "$work/$name.confusion.png" --predictions-figure "$work/$name.predictions.png" \
    --log "$work/$name.evaluate-log.json"
  $python -c "import json; log = json.load(open('$work/$name.log.json')); print('$name', log['fingerprint'], \
    round(log['seconds_per_epoch'], 3), 's/epoch')"
}
same() {  # same A B: are two runs' results byte-identical?
  for suffix in pt train.json loss.csv evaluate.json confusion.csv; do
    cmp -s "$work/$1.$suffix" "$work/$2.$suffix" && echo "identical: $suffix" || echo "DIFFERENT: $suffix"
  done
}
run mlp "$work/params.yaml" && run mlp-again "$work/params.yaml" && same mlp mlp-again
run cnn "$work/cnn.yaml" && run cnn-again "$work/cnn.yaml" && same cnn cnn-again
$python -m stages.train --params "$work/absent.yaml" --split "$work/split" --model "$work/x.pt"; echo "exit code $?"
$python -m benchmarks.bench_training --device "$device" --data real --raw "$mirror" --repeats 3 \
  --archs mlp_128_64_relu,mlp_20_sigmoid,lenet5,cnn_small
$python -m pytest -q -p no:cacheprovider -o addopts="" tests/test_data.py tests/test_equivalence.py 2>&1 | tail -3
