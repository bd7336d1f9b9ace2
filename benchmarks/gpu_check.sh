#!/usr/bin/env bash
# The checks to run where a GPU can be had: the stages on CUDA twice (are the results bitwise
# identical?), the second architecture, the error for an absent device, the training benchmark,
# and the unit tests. Usage: bash benchmarks/gpu_check.sh MIRROR_DIR [DEVICE]
# (MIRROR_DIR holds the four MNIST .gz files; DEVICE defaults to cuda).
set -u
export PYTHONUNBUFFERED=1
mirror=$(cd "${1:?usage: gpu_check.sh MIRROR_DIR [DEVICE]}" && pwd)
device=${2:-cuda}
work=$(mktemp -d)
python=${PYTHON:-python3}

nvidia-smi -L 2>/dev/null
$python -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "no cuda")'
$python - "$work" "$device" <<'PY'
import sys, yaml
params = yaml.safe_load(open("params.yaml"))
params["device"] = sys.argv[2]
yaml.safe_dump(params, open(f"{sys.argv[1]}/params.yaml", "w"))
params["device"] = "cuda:7"
yaml.safe_dump(params, open(f"{sys.argv[1]}/absent.yaml", "w"))
PY
p="--params $work/params.yaml"
MNIST_MIRRORS="file://$mirror" $python -m stages.download $p --out "$work/raw"
$python -m stages.split $p --raw "$work/raw" --out "$work/split" --samples "$work/samples.png"

run() {  # run NAME [extra train flags]: train and evaluate into $work/NAME.*
  local name=$1; shift
  $python -m stages.train $p "$@" --split "$work/split" --model "$work/$name.pt" \
    --metrics "$work/$name.train.json" --curves "$work/$name.loss.csv" \
    --curves-figure "$work/$name.curves.png" --summary "$work/$name.summary.txt" \
    --log "$work/$name.log.json" | grep -E "parameters|Epoch : (1|17)/"
  $python -m stages.evaluate $p ${arch:+--arch $arch} --split "$work/split" --model "$work/$name.pt" \
    --metrics "$work/$name.evaluate.json" --confusion "$work/$name.confusion.csv" \
    --confusion-figure "$work/$name.confusion.png" --predictions-figure "$work/$name.predictions.png" \
    --log "$work/$name.evaluate-log.json"
}
SECONDS=0; run first; echo "first run: ${SECONDS}s"
run second
for suffix in train.json loss.csv evaluate.json confusion.csv; do
  cmp -s "$work/first.$suffix" "$work/second.$suffix" && echo "identical: $suffix" || echo "DIFFERENT: $suffix"
done
cat "$work/first.log.json"
arch=mlp_20_sigmoid run sigmoid --arch mlp_20_sigmoid
$python -m stages.train --params "$work/absent.yaml" --split "$work/split" --model "$work/x.pt"; echo "exit code $?"
$python -m benchmarks.bench_training --device "$device" --data real --raw "$mirror" --repeats 3
$python -m pytest -q -p no:cacheprovider tests/test_backprop.py tests/test_equivalence.py tests/test_models.py tests/test_data.py 2>&1 | tail -3
