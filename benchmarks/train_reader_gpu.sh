#!/usr/bin/env bash
# The reader training run as it was done on a lent GPU machine (one call, <= 10 min):
# the shipped weights, then learning-curve points while time is left.
# The same command without a GPU is the documented CPU path (python -m rag.training.train_reader).
# Inputs travel in .carry/ (ignored by git): data/ (copies of shared/data files) and minilm/
# (the packaged MiniLM saved as fp16 to fit the transfer limit).
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
start=$(date +%s)
nvidia-smi -L || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
train() { python3 -m rag.training.train_reader --data .carry/data --base .carry/minilm "$@"; }

# 1. the shipped reader: every training question, 192-token windows, 3 epochs
train --out /tmp/main --max-len 192 --epochs 3 --save-every 1000000 2>&1 | tee "$OUT/main.log" | grep -v '^train:'
cp /tmp/main/record.json "$OUT/record-main.json"
(cd /tmp/main/model && split -b 15M -d model.safetensors "$OUT/model.safetensors.part" && tar cf "$OUT/model-meta.tar" --exclude=model.safetensors .)
sha256sum /tmp/main/model/model.safetensors | tee "$OUT/model.sha256"

# 2. learning curve (records only), while the call has time left
for cfg in "30000 192 1" "0 192 2" "0 128 2" "10000 192 1" "0 256 2"; do
  set -- $cfg
  if (( $(date +%s) - start > 400 )); then echo "curve: no time left for $cfg"; break; fi
  train --out "/tmp/curve-$1-$2-$3" --max-questions "$1" --max-len "$2" --epochs "$3" --no-save --ood-limit 1000 2>&1 | grep -E '^\[train\]|"f1"' | head -3
  python3 -c "import json,sys; r=json.load(open('/tmp/curve-$1-$2-$3/record.json')); print(json.dumps(r))" >> "$OUT/curve.jsonl"
done
echo "total $(( $(date +%s) - start )) s"
