#!/usr/bin/env bash
# CPU stand-ins for the shipped checkpoints (small models, time-boxed): what produced the
# committed CPU checkpoints. Translation models train two at a time, one thread each (a
# 2-core machine). The GPU recipe is scripts/train_gpu.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/multi30k}
CACHE=${CACHE:-cache/multi30k-tokens.json.gz}
export OMP_NUM_THREADS=1
rev="--task reverse --epochs 15 --train-size 40000 --lr 3e-3 --patience 4 --device cpu"
tr="--task translate --data-dir $DATA --cache $CACHE --emb 128 --hidden 256 --attn-dim 128 \
  --tie-embeddings --dropout 0.3 --epochs 12 --patience 2 --half --device cpu"
$PY -m seq2seq.train $rev --arch bahdanau --epochs 30 --patience 6 --out checkpoints/reverse-bahdanau
for arch in ${REV_ARCHS-lstm gru}; do
  $PY -m seq2seq.train $rev --arch $arch --layers 2 --out checkpoints/reverse-$arch
done
$PY -m seq2seq.train $tr --arch bahdanau --max-minutes 13 --out checkpoints/translate-bahdanau &
$PY -m seq2seq.train $tr --arch luong --max-minutes 13 --out checkpoints/translate-luong &
wait
$PY -m seq2seq.train $tr --arch gru --max-minutes 17 --out checkpoints/translate-gru &
$PY -m seq2seq.train $tr --arch lstm --layers 2 --max-minutes 17 --out checkpoints/translate-lstm &
wait
