#!/usr/bin/env bash
# CPU stand-ins for the shipped checkpoints (small models, time-boxed), one after another.
# The GPU recipe is scripts/train_gpu.sh; these exist so the app has real models to load.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/multi30k}
CACHE=${CACHE:-cache/multi30k-tokens.json.gz}
common_rev="--task reverse --epochs 15 --train-size 40000 --lr 3e-3 --patience 4 --device cpu"
common_tr="--task translate --data-dir $DATA --cache $CACHE --emb 128 --hidden 256 --attn-dim 128 \
  --tie-embeddings --dropout 0.3 --epochs 10 --patience 2 --half --device cpu --max-minutes ${TR_MINUTES:-9}"
for arch in ${REV_ARCHS-lstm gru}; do
  $PY -m seq2seq.train $common_rev --arch $arch --layers 2 --out checkpoints/reverse-$arch
done
for arch in ${TR_ARCHS-bahdanau luong gru lstm}; do
  layers=1; [ "$arch" = lstm ] && layers=2
  $PY -m seq2seq.train $common_tr --arch $arch --layers $layers --out checkpoints/translate-$arch
done
