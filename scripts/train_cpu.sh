#!/usr/bin/env bash
# The commands that produced the CPU-trained checkpoints, on 2 cores, one thread per run
# (two or three runs side by side). Runs write to runs/out/NAME and keep their state in
# runs/NAME (saved after every epoch): a killed run continues with the same command plus
# --resume. Finished runs are copied into checkpoints/ by `finish` below. Times are for
# 2 cores of an Intel Xeon with AVX-512/AMX shared with other work (see each card's
# provenance for the real figure).
#
#   bash scripts/train_cpu.sh translate-bahdanau     # one model (the names below), or
#   bash scripts/train_cpu.sh all                    # every one, two at a time
#   THREADS=2 RESUME=1 bash scripts/train_cpu.sh translate-gru   # both cores; continue a killed run
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/multi30k}
CACHE=${CACHE:-cache/multi30k-tokens.json.gz}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p runs/logs runs/out
tr="--task translate --data-dir $DATA --cache $CACHE --emb 128 --hidden 256 --attn-dim 128 \
  --tie-embeddings --dropout 0.3 --label-smoothing 0.1 --half --device cpu"
rev="--task reverse --min-len 1 --max-len 40 --train-size 40000 --lr 3e-3 --device cpu"
train() { local name=$1; shift; $PY -m seq2seq.train --out "runs/out/$name" --state-dir "runs/$name" "$@" \
  ${RESUME:+--resume} >> "runs/logs/$name.log" 2>&1; }
finish() { local name=$1 from=${2:-runs/out/$1}; rm -rf "checkpoints/$name.new" && cp -r "$from" "checkpoints/$name.new" \
  && $PY -m seq2seq.snapshots "checkpoints/$name.new" --share-vocab --max-mib 15 \
  && rm -rf "checkpoints/$name" && mv "checkpoints/$name.new" "checkpoints/$name"; }

# attention models: early stop on validation BLEU (patience 3), then the same run extended
# with a learning-rate decay (halved after every epoch without improvement, patience 4);
# extra arguments (a later --hidden wins over $tr's) go to both stages
# (stage 2's patience: $P2, default 4); then the decoding is chosen on validation BLEU among
# $DECODINGS (beam, beam:alpha, :no-unk forbidding <unk>) and written into the card, and the corpus file is made
translate_attention() { local arch=$1; shift
  train "translate-$arch" $tr --arch "$arch" "$@" --epochs 60 --patience 3 --snapshots
  train "translate-$arch" $tr --arch "$arch" "$@" --epochs 60 --patience "${P2:-4}" --lr-decay 0.5 --snapshots --resume
  finish "translate-$arch"
  if [ -n "${DECODINGS:-}" ]; then
    $PY -m seq2seq.evaluate "checkpoints/translate-$arch" --cache "$CACHE" --data-dir "$DATA" \
      --choose-decoding "$DECODINGS" --update-card
  fi
  $PY -m seq2seq.corpus "checkpoints/translate-$arch" --cache "$CACHE" --data-dir "$DATA" --split test2016; }
# stage 3 of an attention model: a continuation with its own seed (train --init-from: the model's sizes and
# vocabularies, lr 5e-4 (or a later --lr) halved after every epoch without improvement, patience 3), and its
# average with the model (seq2seq.soup); the decoding of each chosen on val among $DECODINGS, and of the model,
# the continuation and the soup the one with the best val BLEU shipped (a tie: the model stays), its snapshot
# series the model's, ending with the shipped weights
continuation() { local arch=$1 seed=$2; shift 2
  train "translate-$arch-ft$seed" --task translate --data-dir "$DATA" --cache "$CACHE" --device cpu --half \
    --dropout 0.3 --label-smoothing 0.1 --tie-embeddings --arch "$arch" --init-from "checkpoints/translate-$arch" \
    --seed "$seed" --lr 5e-4 --lr-decay 0.5 --epochs 24 --patience 3 --eval-beam 1 "$@"; }
val_best() { $PY -c 'import json, sys
val = {p: json.load(open(p + "/card.json"))["metrics"]["val"]["bleu"] for p in sys.argv[1:]}
print(max(val, key=val.get))' "$@"; }
continue_and_average() { local arch=$1 seed=$2; shift 2; local name="translate-$arch" ft="translate-$arch-ft$seed"
  continuation "$arch" "$seed" --name "$name" "$@"
  $PY -m seq2seq.evaluate "runs/out/$ft" --cache "$CACHE" --data-dir "$DATA" --choose-decoding "$DECODINGS" \
    --update-card || return 1
  $PY -m seq2seq.soup "runs/out/$name-soup" "checkpoints/$name" "runs/out/$ft" --name "$name" \
    --series-from "checkpoints/$name" --cache "$CACHE" --data-dir "$DATA" --decodings "$DECODINGS" || return 1
  local best; best=$(val_best "checkpoints/$name" "runs/out/$ft" "runs/out/$name-soup")
  if [ "$best" = "runs/out/$ft" ]; then
    $PY -m seq2seq.snapshots "runs/out/$ft" --continue-series "checkpoints/$name" || return 1
  fi
  if [ "$best" != "checkpoints/$name" ]; then
    finish "$name" "$best"
    $PY -m seq2seq.corpus "checkpoints/$name" --cache "$CACHE" --data-dir "$DATA" --split test2016
  fi; }
# stage 4: more continuations of the shipped model, each with its own seed as in stage 3 (at most 8 epochs), and
# the uniform soup of the model and all of them, its decoding chosen on val; it ships when its val BLEU beats the
# model's, its snapshot series the model's, ending with the soup
continue_more_and_average() { local arch=$1 seeds=$2; shift 2; local name="translate-$arch" runs=() seed
  for seed in $seeds; do
    continuation "$arch" "$seed" --epochs 8 "$@" || return 1
    runs+=("runs/out/$name-ft$seed")
  done
  $PY -m seq2seq.soup "runs/out/$name-soup-all" "checkpoints/$name" "${runs[@]}" --name "$name" \
    --series-from "checkpoints/$name" --cache "$CACHE" --data-dir "$DATA" --decodings "$DECODINGS" || return 1
  if [ "$(val_best "checkpoints/$name" "runs/out/$name-soup-all")" != "checkpoints/$name" ]; then
    finish "$name" "runs/out/$name-soup-all"
    $PY -m seq2seq.corpus "checkpoints/$name" --cache "$CACHE" --data-dir "$DATA" --split test2016
  fi; }
translate_plain() { local arch=$1; shift
  train "translate-$arch" $tr --arch "$arch" "$@" --epochs 40 --patience 4 --lr-decay 0.5 --snapshots
  finish "translate-$arch"; }
reverse_model() { local arch=$1; shift
  train "reverse-$arch" $rev --arch "$arch" --epochs 12 --patience 3 --lr-decay 0.7 "$@"
  finish "reverse-$arch"; }

# the decodings the attention models choose among on val BLEU
BPE_DECODINGS=1,3,4,5,6,7,8,10,12,15,5:0.6,5:0.8,5:0.9,5:1.1,5:1.2,6:0.9,6:1.1,10:0.8,10:1.2,5:cov0.1,1:no-unk,5:no-unk,6:no-unk,8:no-unk,10:no-unk,10:0.8:no-unk,15:no-unk

case "${1:-all}" in
  # German in byte-pair pieces (4000 merges: a 4039-piece source vocabulary, which leaves room for hidden
  # 352 within 4.1M parameters, the most whose six int4 snapshots fit 15 MiB), bf16 matmuls where the CPU
  # has them, weights averaged (EMA 0.999); 30 epochs, 98 min on one EPYC thread shared with 1-2 other
  # runs; decoding chosen on val
  # stage 3: a continuation, seed 11 (10 epochs, 39 min on one thread of the AVX2-only EPYC beside a second run,
  # float32 there), averaged with the model: the soup beat the model on val BLEU (a second continuation, seed 12
  # at --lr 2e-4, and the three-way soup were tried too and lost on val)
  translate-bahdanau) DECODINGS=$BPE_DECODINGS translate_attention bahdanau --hidden 352 --cpu-bf16 \
      --ema 0.999 --src-bpe 4000
    DECODINGS=$BPE_DECODINGS continue_and_average bahdanau 11 --cpu-bf16 --ema 0.999 --src-bpe 4000 ;;
  # the same recipe as translate-bahdanau, stage 2 with patience 4: 43 epochs, 119 min on one EPYC thread
  # shared with 1-2 other runs
  # stage 3: a continuation, seed 11 (13 epochs, 42 min on one thread of the AVX2-only EPYC beside a second run,
  # float32 there), which beat its average with the model and the model on val BLEU
  # stage 4: four continuations of that (seeds 12-15, 5-8 epochs, 21-28 min each there, two side by side) and the
  # soup of all five: val BLEU 40.28 against the model's 40.00 (the soup of the model and seeds 12-13: 40.26)
  translate-luong) DECODINGS=$BPE_DECODINGS translate_attention luong --hidden 320 --cpu-bf16 --ema 0.999 \
      --src-bpe 8000
    DECODINGS=$BPE_DECODINGS continue_and_average luong 11 --cpu-bf16 --ema 0.999 --src-bpe 8000
    DECODINGS=$BPE_DECODINGS continue_more_and_average luong "12 13 14 15" --cpu-bf16 --ema 0.999 --src-bpe 8000 ;;
  translate-gru) translate_plain gru ;;
  translate-lstm) translate_plain lstm --layers 2 ;;
  reverse-bahdanau) reverse_model bahdanau --epochs 9 --patience 5 --snapshots ;;  # val exact match 1.0 from epoch 4; ended at 9
  reverse-gru) reverse_model gru --layers 2 ;;
  reverse-lstm) reverse_model lstm --layers 2 ;;
  # the teacher-forcing study at full scale (results in checkpoints/sweeps/SWEEP.json, rewritten after
  # every run; RESUME=1 skips the runs already there): 54 reversal runs, 7 + 4 translation runs
  sweep-reverse) $PY -m seq2seq.sweep reverse --device cpu --jobs "${JOBS:-1}" --threads "${THREADS:-2}" \
      ${RESUME:+--resume} >> runs/logs/sweep-reverse.log 2>&1 ;;
  sweep-translate) $PY -m seq2seq.sweep translate --data-dir "$DATA" --cache "$CACHE" --device cpu --cpu-bf16 \
      --jobs "${JOBS:-1}" --threads "${THREADS:-2}" ${RESUME:+--resume} >> runs/logs/sweep-translate.log 2>&1 ;;
  all)
    (DECODINGS=$BPE_DECODINGS translate_attention bahdanau --hidden 352 --cpu-bf16 --ema 0.999 \
      --src-bpe 4000; DECODINGS=$BPE_DECODINGS continue_and_average bahdanau 11 --cpu-bf16 --ema 0.999 \
      --src-bpe 4000; translate_plain gru) &
    (DECODINGS=$BPE_DECODINGS translate_attention luong --hidden 320 --cpu-bf16 --ema 0.999 --src-bpe 8000
      DECODINGS=$BPE_DECODINGS continue_and_average luong 11 --cpu-bf16 --ema 0.999 --src-bpe 8000
      DECODINGS=$BPE_DECODINGS continue_more_and_average luong "12 13 14 15" --cpu-bf16 --ema 0.999 --src-bpe 8000
      translate_plain lstm --layers 2) &
    wait
    (reverse_model bahdanau --epochs 9 --patience 5 --snapshots; reverse_model gru --layers 2) &
    reverse_model lstm --layers 2 &
    wait ;;
  *) echo "unknown model: $1" >&2; exit 2 ;;
esac
