#!/usr/bin/env bash
# The checks to run where a GPU can be had: the pipeline on CUDA twice (are the results bitwise
# identical? does the model file load without a GPU?), the MLP with its steps replayed as a CUDA
# graph (also killed after an epoch and resumed: the bytes of an uninterrupted run?), the CNN (a
# one-cycle schedule) eager, the error for an absent device, the training benchmark (MLPs and CNNs,
# the tutorial loop against the in-memory one and its CUDA-graph capture), and the unit tests that
# have a CUDA case.
# Usage: bash benchmarks/gpu_check.sh MIRROR_DIR [DEVICE] (MIRROR_DIR holds the four MNIST .gz
# files; DEVICE defaults to cuda).
set -u
export PYTHONUNBUFFERED=1
mirror=$(cd "${1:?usage: gpu_check.sh MIRROR_DIR [DEVICE]}" && pwd)
device=${2:-cuda}
work=$(mktemp -d)
python=${PYTHON:-python3}

nvidia-smi -L 2>/dev/null
$python - "$work" "$device" <<'PY'
import sys
from stages.core.params import load_raw, write_raw
params = load_raw("params.yaml")
params["device"] = sys.argv[2]
write_raw(params, f"{sys.argv[1]}/params.yaml")  # and catalog.yaml beside it
recipe = params["grid"]["recipes"]["cnn_small"]  # the grid's recipe, as the single configuration
params.update(arch=recipe["arch"], optimizer=recipe["optimizer"], schedule=recipe["schedule"])
params["train"].update(recipe["train"])
write_raw(params, f"{sys.argv[1]}/cnn.yaml")
params["device"] = "cuda:7"
write_raw(params, f"{sys.argv[1]}/absent.yaml")
PY
MNIST_MIRRORS="file://$mirror" $python -m stages download --out "$work/raw"
$python -m stages split --params "$work/params.yaml" --raw "$work/raw" --out "$work/split" --samples "$work/samples.png"

train() {  # train NAME PARAMS: the train stage into $work/NAME.*
  $python -m stages train --params "$2" --split "$work/split" --model "$work/$1.pt" \
    --metrics "$work/$1.train.json" --curves "$work/$1.loss.csv" --curves-figure "$work/$1.curves.png" \
    --summary "$work/$1.summary.txt" --log "$work/$1.log.json" --checkpoint "$work/$1.ckpt"
}
run() {  # run NAME PARAMS: train (resuming from $work/NAME.ckpt if there is one) and evaluate
  local name=$1 params=$2
  train "$name" "$params" | grep -E "numerics|resuming|Epoch : 1/|kept"
  $python -m stages evaluate --params "$params" --split "$work/split" --model "$work/$name.pt" \
    --metrics "$work/$name.evaluate.json" --per-class "$work/$name.per-class.json" \
    --confusion "$work/$name.confusion.csv" \
    --confusion-figure "$work/$name.confusion.png" --predictions-figure "$work/$name.predictions.png" \
    --log "$work/$name.evaluate-log.json"
  $python -c "import json; log = json.load(open('$work/$name.log.json')); timed = json.load(open('$work/$name.log.timings.json')); \
    print('$name', log['fingerprint'], round(timed['seconds_per_epoch'], 3), 's/epoch, CUDA graph:', log['cuda_graph'])"
}
killed() {  # killed NAME PARAMS: a train run killed once its first epoch is done, leaving its checkpoint
  train "$1" "$2" > "$work/$1.out" &
  local shell=$!
  until grep -q "^Epoch : 1/" "$work/$1.out" 2>/dev/null || ! kill -0 $shell 2>/dev/null; do sleep 0.1; done
  kill -9 $(pgrep -P $shell) $shell 2>/dev/null; wait $shell 2>/dev/null
  ls "$work/$1.ckpt" >/dev/null && echo "$1: killed after epoch 1, checkpoint kept"
}
same() {  # same A B: are two runs' results byte-identical?
  for suffix in pt train.json loss.csv evaluate.json confusion.csv; do
    cmp -s "$work/$1.$suffix" "$work/$2.$suffix" && echo "identical: $suffix" || echo "DIFFERENT: $suffix"
  done
}
run mlp "$work/params.yaml" && run mlp-again "$work/params.yaml" && same mlp mlp-again
$python -c "import torch; weights = torch.load('$work/mlp.pt', weights_only=True)['state_dict']; \
  print('model file loads without a GPU:', all(t.device.type == 'cpu' for t in weights.values()))"
killed mlp-resumed "$work/params.yaml" && run mlp-resumed "$work/params.yaml" && same mlp mlp-resumed
run cnn "$work/cnn.yaml" && run cnn-again "$work/cnn.yaml" && same cnn cnn-again
train absent "$work/absent.yaml"; echo "exit code $?"
$python -m benchmarks bench_training --device "$device" --data real --raw "$mirror" --repeats 3 \
  --archs mlp_128_64_relu,mlp_20_sigmoid,lenet5,cnn_small
$python -m pytest -q -p no:cacheprovider -o addopts="" -m gpu 2>&1 | tail -3
