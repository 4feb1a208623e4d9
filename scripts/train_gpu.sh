#!/usr/bin/env bash
# Every shipped checkpoint, trained at once on one GPU (one H100 fits them all), in one
# command that ends inside the device tool's 10-minute limit. The GPU machine has torch but
# no spaCy: carry the token cache (cache/multi30k-tokens.json.gz, written by any
# `seq2seq.train --task translate --cache ...` run here) and nothing needs tokenizing there.
#
#   bash scripts/train_gpu.sh            # writes checkpoints/*, logs in $LOGS
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
CK=${CK:-checkpoints}
LOGS=${LOGS:-runs/logs}
MINUTES=${MINUTES:-8}
CACHE=${CACHE:-cache/multi30k-tokens.json.gz}
mkdir -p "$LOGS"
tr="--task translate --cache $CACHE --data-dir ${DATA:-../shared/data/multi30k} --device cuda --half \
  --epochs 40 --patience 5 --max-minutes $MINUTES --label-smoothing 0.1 --eval-beam 5 --tie-embeddings"
rev="--task reverse --device cuda --half --epochs 40 --train-size 100000 --lr 2e-3 --patience 5 --max-minutes $MINUTES"
run() { local name=$1; shift; $PY -m seq2seq.train --out "$CK/$name" --state-dir "runs/$name" "$@" > "$LOGS/$name.log" 2>&1 & }
run translate-bahdanau $tr --arch bahdanau --emb 256 --hidden 512 --attn-dim 256 --dropout 0.5
run translate-luong    $tr --arch luong    --emb 256 --hidden 512 --dropout 0.5
run translate-gru      $tr --arch gru      --emb 256 --hidden 512 --dropout 0.5
run translate-lstm     $tr --arch lstm     --emb 256 --hidden 512 --layers 2 --dropout 0.5
run reverse-bahdanau   $rev --arch bahdanau --emb 64 --hidden 256 --attn-dim 128
run reverse-gru        $rev --arch gru  --emb 64 --hidden 256 --layers 2
run reverse-lstm       $rev --arch lstm --emb 64 --hidden 256 --layers 2
wait
for f in "$LOGS"/*.log; do echo "== $f"; grep -E "^(wrote|error)" "$f" || tail -n 3 "$f"; done
