#!/usr/bin/env bash
# mt2kd: the one staged pipeline (icefall conventions). See `bash run.sh --help`.
#
#   bash run.sh                                  # everything, on the embedded synthetic corpus egs/mini
#   bash run.sh --stage 2 --stop-stage 3         # only some stages
#   bash run.sh --recipe egs/librispeech_audioset_voxceleb --dry-run true   # print the commands only
#
# A stage that finished leaves a marker (<data-dir>/.done or <exp-dir>/.done), so a re-run skips it; an interrupted
# stage has no marker and is redone (stages also skip their own finished parts where they can).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

recipe=egs/mini            # egs/<corpus>: prepare.sh + config.sh (+ conf/)
stage=0
stop_stage=100
nj=2                       # parallel jobs for data preparation and features
data_dir=                  # default: data/<recipe name>
exp_dir=                   # default: exp/<recipe name>
recipe_config=             # default: <recipe>/config.sh
dry_run=false              # true: print every command instead of running it
force=false                # true: ignore stage markers and redo the selected stages
decoding_methods=${decoding_methods:-}  # stage 9: comma-separated methods or "all" (default: the recipe's, else greedy_search)

stage_names=(install prepare features lang teachers dump kd finetune baselines evaluate report export)
usage() {
  cat <<USAGE
usage: bash run.sh [--recipe egs/mini] [--stage N] [--stop-stage M] [--nj 2] [--data-dir DIR] [--exp-dir DIR]
                   [--recipe-config FILE] [--dry-run true] [--force true] [--decoding-methods M1,M2]
                   [--<recipe setting> VALUE ...]
stages:
   0 install    tools/install.sh: virtualenv, torch, lhotse, fast_rnnt, espeak-ng/sox/flite
   1 prepare    <recipe>/prepare.sh writes the manifest contract (mt2kd_lib/data/contract.py); checked + validated
   2 features   80-dim fbank for every split (LilcomChunkyWriter), data/<recipe>/fbank/*_cuts_*.jsonl.gz
   3 lang       sentencepiece BPE, data/<recipe>/lang_bpe_<N>/{bpe.model,tokens.txt}; lexicon, 3-gram LM, L/LG/HLG graphs
   4 teachers   train / load the three teachers (ASR, AT, SV)
   5 dump       the KD pool as Shar shards; teacher outputs (or MVQ codebook indexes) as Shar fields beside them
   6 kd         stage 1: multi-teacher knowledge distillation of the Zipformer2 student
   7 finetune   stage 2: multi-task fine-tuning (pruned RNN-T + AT + SV)
   8 baselines  single-task and multi-task-from-scratch students, KD ablations
   9 evaluate   WER / mAP / EER+minDCF of every system
  10 report     <recipe>/RESULTS.md + results.json + plots
  11 export     deployable models
USAGE
}

# The recipe's settings are declared before parsing so that they can be given on the command line.
for ((i = 1; i <= $#; i++)); do
  case "${!i}" in
    --recipe) j=$((i + 1)); recipe=${!j} ;;
    --recipe=*) recipe=${!i#--recipe=} ;;
    --recipe-config) j=$((i + 1)); recipe_config=${!j} ;;
    --recipe-config=*) recipe_config=${!i#--recipe-config=} ;;
  esac
done
recipe=${recipe%/}
recipe_config=${recipe_config:-$recipe/config.sh}
if [ ! -f "$recipe_config" ]; then echo "run.sh: no recipe config $recipe_config (is --recipe right?)" >&2; exit 1; fi
vars_before=$(compgen -v | sort)
# shellcheck disable=SC1090
. "$recipe_config"
recipe_vars=$(comm -13 <(echo "$vars_before") <(compgen -v | sort) | grep -v '^vars_before$' || true)
. tools/parse_options.sh
# Boolean settings take true or false only, also when set in the environment (parse_options.sh checks options):
# every `name=${name:-true|false}` of the recipe configs, and this script's own.
for _b in dry_run force $(sed -nE 's/^([A-Za-z0-9_]+)=\$\{\1:?-(true|false)\}.*/\1/p' "$recipe_config" \
                          "$recipe/config.sh" | sort -u); do
  case "${!_b:-}" in
    true|false) ;;
    *) echo "run.sh: $_b (--${_b//_/-}) must be true or false, got '${!_b:-}'" >&2; exit 1 ;;
  esac
done
# The recipe's prepare.sh (a separate process) sees the final values, command-line overrides included.
# shellcheck disable=SC2086
[ -z "$recipe_vars" ] || export $recipe_vars

name=$(basename "$recipe")
data_dir=${data_dir:-data/$name}
exp_dir=${exp_dir:-exp/$name}
manifest_dir=$data_dir/manifests
fbank_dir=$data_dir/fbank
lang_dir=$data_dir/lang_bpe_${vocab_size:-500}

log() {
  # icefall style: time, file:line, message
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

run() {  # every command a stage runs goes through here, so --dry-run true prints the whole pipeline
  log "+ $*"
  if [ "$dry_run" != true ]; then "$@"; fi
}

marker() {  # data stages keep their markers with the data, model stages with the experiment
  if [ "$1" -le 3 ]; then echo "$data_dir/.done/stage-$1-${stage_names[$1]}"; else echo "$exp_dir/.done/stage-$1-${stage_names[$1]}"; fi
}

stage_selected() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

run_stage() {  # run_stage N: runs stage_N unless it is outside --stage/--stop-stage or already done
  local n=$1 m
  stage_selected "$n" || return 0
  m=$(marker "$n")
  if [ -f "$m" ] && [ "$force" != true ]; then
    log "Stage $n (${stage_names[$n]}): done before ($m), skipping"
    return 0
  fi
  log "Stage $n (${stage_names[$n]}): start"
  local t0=$SECONDS
  "stage_$n"
  if [ "$dry_run" != true ]; then
    mkdir -p "$(dirname "$m")"
    echo "finished $(date '+%F %T') in $((SECONDS - t0)) s" > "$m"
  fi
  log "Stage $n (${stage_names[$n]}): done in $((SECONDS - t0)) s"
}

stage_0() { run bash tools/install.sh; }

stage_1() {
  run bash "$recipe/prepare.sh" --manifest-dir "$manifest_dir" --nj "$nj"
  run python3 local/check_manifests.py --manifest-dir "$manifest_dir"
}

stage_2() { run python3 local/compute_fbank.py --manifest-dir "$manifest_dir" --fbank-dir "$fbank_dir" --nj "$nj"; }

stage_3() {
  run python3 local/prepare_bpe.py --manifest-dir "$manifest_dir" --lang-dir "$lang_dir" --vocab-size "$vocab_size"
  # Lexicon + word 3-gram (ARPA) from the training transcripts; with k2 also L/LG/HLG (.pt and OpenFst .fst).
  run python3 local/prepare_lang_graphs.py --manifest-dir "$manifest_dir" --lang-dir "$lang_dir"
}

# ---- model stages -------------------------------------------------------------------------------------------

bg_pids=() bg_names=()  # jobs started by parallel() and not yet collected by wait_all()

parallel() {  # parallel NAME [--done-if FILE] CMD...: run in the background (at most $train_jobs at once),
  # log to $exp_dir/logs/NAME.log; skipped when FILE (a training's last checkpoint) exists: finished before.
  local name=$1 done_file=
  shift
  if [ "$1" = --done-if ]; then done_file=$2; shift 2; fi
  if [ -n "$done_file" ] && [ -f "$done_file" ] && [ "$dry_run" != true ]; then
    log "[$name] $done_file exists: trained before, not redone (remove it to retrain)"
    return 0
  fi
  while [ "$(jobs -rp | wc -l)" -ge "${train_jobs:-1}" ]; do wait -n 2>/dev/null || true; done
  log "+ [$name] $*   (log: $exp_dir/logs/$name.log)"
  if [ "$dry_run" = true ]; then return 0; fi
  mkdir -p "$exp_dir/logs"
  rm -f "$exp_dir/logs/$name.failed"
  # A failure leaves <name>.failed: exit statuses can be lost to `wait -n` above, files cannot.
  ( "$@" > "$exp_dir/logs/$name.log" 2>&1 || { touch "$exp_dir/logs/$name.failed"
      echo "FAILED: $name (see $exp_dir/logs/$name.log)" >&2; tail -20 "$exp_dir/logs/$name.log" >&2; exit 1; } ) &
  bg_pids+=($!) bg_names+=("$name")
}

wait_all() {  # wait for this shell's parallel() jobs; fail if any failed
  local pid name failed=()
  for pid in "${bg_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for name in "${bg_names[@]}"; do [ ! -f "$exp_dir/logs/$name.failed" ] || failed+=("$name"); done
  bg_pids=() bg_names=()
  [ ${#failed[@]} = 0 ] || { log "failed: ${failed[*]}"; exit 1; }
}

# DDP: --world-size N spawns N processes (GPUs when present); MUSAN noise mixing when the corpus has MUSAN.
opt_common=(--max-duration "${max_duration:-300}" --lr-warmup-batches "${lr_warmup_batches:-500}"
            --model-warmup-batches "${model_warmup_batches:-4000}" --base-lr "${base_lr:-0.045}" --num-threads 1
            --log-interval 20 --world-size "${world_size:-1}" --spec-augment "${spec_augment:-true}"
            --average-period "${average_period:-200}")
train_common=(--recipe-data "$data_dir" "${opt_common[@]}" --warm-step "${warm_step:-2000}")
musan_opt=()
if [ "${use_musan:-false}" = true ]; then musan_opt=(--musan-cuts "$fbank_dir/musan_cuts.jsonl.gz"); fi
train_common+=("${musan_opt[@]}")
# --streaming true: the MT2KD student (KD and fine-tuning) gets a causal encoder trained with random chunk sizes.
streaming_opt=()
if [ "${streaming:-false}" = true ]; then
  streaming_opt=(--causal true --chunk-size "${chunk_size:-16,32,64,-1}" --left-context-frames "${left_context_frames:-64,128,256,-1}")
fi

stage_4() {
  if [ "${teachers_mode:-train}" = pretrained ]; then
    run python3 local/select_teachers.py --mode pretrained --teachers-config "$teachers_config" \
      --recipe-data "$data_dir" --out "$exp_dir/teachers.yaml"
    return
  fi
  local tasks=(asr at sv)
  # A pretrained SV teacher needs no recipe-trained one (auto compares both, so it trains it).
  if [ "${sv_teacher:-auto}" = resemblyzer ]; then tasks=(asr at); fi
  for task in "${tasks[@]}"; do
    parallel "teacher_$task" --done-if "$exp_dir/teachers/$task/epoch-$teacher_epochs.pt" python3 local/train.py --task "$task" --use-teacher-extra true \
      --model-config "$teacher_config" --exp-dir "$exp_dir/teachers/$task" --num-epochs "$teacher_epochs" \
      "${train_common[@]}"
  done
  wait_all
  run python3 local/select_teachers.py --mode train --teachers-exp "$exp_dir/teachers" --epoch "$teacher_epochs" --avg "$avg" --use-averaged-model "${use_averaged_model:-false}" \
    --sv-teacher "$sv_teacher" --recipe-data "$data_dir" --out "$exp_dir/teachers.yaml"
}

stage_5() {
  # With task-ID masking a teacher's outputs are used only on cuts of its own task (teacher_outputs); the
  # no-masking ablation needs them on every cut (teacher_outputs_all).
  local tasks=(${kd_teacher_tasks//,/ }) i=0 origin
  run python3 local/export_pool_shar.py --cuts "$fbank_dir/kd_cuts_pool.jsonl.gz" --out-dir "$exp_dir/kd_pool_shar" \
    --shard-size "${pool_shard_size:-500}"
  for t in ${kd_teachers//,/ }; do
    origin=()
    if [ -n "${tasks[$i]:-}" ]; then origin=(--origin "${tasks[$i]}"); fi
    i=$((i + 1))
    dump_teacher "$t" "$exp_dir/teacher_outputs" "$exp_dir/kd_pool_shar" "${origin[@]}"
    if [ "${ablations:-false}" = true ] || [ "${kd_mask_by_task:-true}" != true ]; then
      dump_teacher "$t" "$exp_dir/teacher_outputs_all" "$exp_dir/kd_pool_shar"
    fi
  done
  if [ "${finetune_at_soft_labels:-false}" = true ]; then
    # Stage-2 AT soft labels: the AT teacher over the AT training split's own Shar export, so that fine-tuning
    # streams the AT cuts with their outputs attached (no join by id).
    at_teacher_name
    run python3 local/export_pool_shar.py --recipe-data "$data_dir" --training-split-of at \
      --out-dir "$exp_dir/at_train_shar" --shard-size "${pool_shard_size:-500}"
    dump_teacher "$at_teacher" "$exp_dir/teacher_outputs_at_train" "$exp_dir/at_train_shar"
  fi
}

at_teacher_name() {  # sets at_teacher: the kd_teachers entry whose kd_teacher_tasks entry is at
  local names tasks i
  names=(${kd_teachers//,/ }) tasks=(${kd_teacher_tasks//,/ }) at_teacher=
  for i in "${!names[@]}"; do [ "${tasks[$i]:-}" != at ] || at_teacher=${names[$i]}; done
  [ -n "$at_teacher" ] || { log "finetune_at_soft_labels=true needs an at teacher in kd_teacher_tasks"; exit 1; }
}

dump_teacher() {  # dump_teacher TEACHER OUT_DIR POOL_DIR [--origin TASK]: TEACHER over the Shar export POOL_DIR
  local mvq_opt=()  # kd_frame_target=mvq: frame-level teachers as MVQ codebook indexes (empty: teachers.yaml's target)
  if [ -n "${kd_frame_target:-}" ]; then
    mvq_opt=(--frame-target "$kd_frame_target" --num-codebooks "${mvq_num_codebooks:-8}"
             --mvq-train-iters "${mvq_train_iters:-400}")
  fi
  run python3 local/dump_teacher.py --pool-dir "$3" --teacher "$1" "${@:4}" \
    --teachers-config "$exp_dir/teachers.yaml" --out-dir "$2" \
    --num-jobs "${dump_jobs:-$nj}" --device "${dump_devices:-cpu}" --num-threads 1 --no-progress "${mvq_opt[@]}"
}

kd_command() {  # kd_command NAME TEACHERS MASK: sets cmd to the stage-1 training of $exp_dir/NAME/kd
  local dir=$exp_dir/teacher_outputs
  if [ "$3" != true ]; then dir=$exp_dir/teacher_outputs_all; fi
  cmd=(python3 local/train_kd.py --recipe-data "$data_dir" --teacher-dir "$dir" --teachers "$2" --mask-by-task "$3"
       --model-config "$student_config" --exp-dir "$exp_dir/$1/kd" --num-epochs "$kd_epochs" "${opt_common[@]}"
       "${musan_opt[@]}" "${streaming_opt[@]}")
}

finetune_command() {  # finetune_command NAME TEACHERS: sets cmd to the stage-2 training of $exp_dir/NAME
  cmd=(python3 local/train.py --task multi --model-config "$student_config"
       --init-from-kd "$exp_dir/$1/kd/epoch-$kd_epochs.pt" --init-from-kd-weights "${finetune_init_weights:-last}"
       --encoder-lr-scale "$finetune_encoder_lr_scale" --distilled-heads-lr-scale "${finetune_distilled_heads_lr_scale:-1.0}"
       --exp-dir "$exp_dir/$1" --num-epochs "$finetune_epochs"
       --freeze-encoder-steps "${finetune_freeze_encoder_steps:-0}" "${train_common[@]}" "${streaming_opt[@]}")
  if [ "${finetune_at_soft_labels:-false}" = true ]; then
    at_teacher_name
    # Soft AT labels only from a teacher this run distils from: an ablation without the AT teacher gets none.
    if [[ ",$2," == *",$at_teacher,"* ]]; then
      cmd+=(--at-soft-labels "$exp_dir/teacher_outputs_at_train" --at-soft-teacher "$at_teacher")
    fi
  fi
}

kd_then_finetune() {  # kd_then_finetune NAME TEACHERS MASK: one stage-1 run and its stage-2 fine-tuning
  kd_command "$1" "$2" "$3"
  [ -f "$exp_dir/$1/kd/epoch-$kd_epochs.pt" ] || "${cmd[@]}" || return 1
  finetune_command "$1" "$2"
  [ -f "$exp_dir/$1/epoch-$finetune_epochs.pt" ] || "${cmd[@]}"
}

stage_6() {
  # The student's size as configured (the paper: ~65.5 M for Zipformer-M with the vocab-500 transducer).
  run python3 local/model_size.py --model-config "$student_config" --vocab-size "$vocab_size"
  kd_command mt2kd "$kd_teachers" "${kd_mask_by_task:-true}"
  parallel mt2kd_kd --done-if "$exp_dir/mt2kd/kd/epoch-$kd_epochs.pt" "${cmd[@]}"
  wait_all
}

stage_7() {
  finetune_command mt2kd "$kd_teachers"
  parallel mt2kd_finetune --done-if "$exp_dir/mt2kd/epoch-$finetune_epochs.pt" "${cmd[@]}"
  wait_all
}

stage_8() {
  local t
  for t in asr at sv; do
    parallel "single_$t" --done-if "$exp_dir/single_$t/epoch-$finetune_epochs.pt" python3 local/train.py \
      --task "$t" --model-config "$student_config" --exp-dir "$exp_dir/single_$t" --num-epochs "$finetune_epochs" \
      "${train_common[@]}"
  done
  parallel multitask_scratch --done-if "$exp_dir/multitask_scratch/epoch-$finetune_epochs.pt" python3 local/train.py \
    --task multi --model-config "$student_config" --exp-dir "$exp_dir/multitask_scratch" \
    --num-epochs "$finetune_epochs" "${train_common[@]}"
  if [ "${ablations:-false}" = true ]; then
    for t in ${kd_teachers//,/ }; do parallel "ablation_only_$t" kd_then_finetune "ablation_only_$t" "$t" true; done
    parallel ablation_no_mask kd_then_finetune ablation_no_mask "$kd_teachers" false
  fi
  wait_all
}

student_weights() {  # --use-averaged-model of MT2KD after stage 9: the weights it chose on dev, when it chose
  if [ "${choose_weights_on_dev:-false}" = true ]; then echo dev; else echo "${use_averaged_model:-false}"; fi
}

stage_9() {
  run python3 local/evaluate_all.py --exp-dir "$exp_dir" --recipe-data "$data_dir" --avg "$avg" --use-averaged-model "${use_averaged_model:-false}" --num-jobs "${train_jobs:-1}" --num-threads 1 \
    --decoding-methods "${decoding_methods:-greedy_search}" --eval-dev "${eval_dev:-true}" \
    --choose-weights-on-dev "${choose_weights_on_dev:-false}"
  if [ "${streaming:-false}" = true ]; then  # the causal MT2KD student, chunk by chunk (streaming_results.md)
    run python3 local/evaluate_streaming.py --exp-dir "$exp_dir/mt2kd" --recipe-data "$data_dir" --avg "$avg" --use-averaged-model "$(student_weights)" \
      --chunk-sizes "${streaming_eval_chunks:-16,32}" --left-context-frames "${streaming_eval_left_context:-64}"
  fi
}

stage_10() {
  run python3 local/report.py --exp-dir "$exp_dir" --data-dir "$data_dir" --recipe "$recipe" --out "$exp_dir/RESULTS.md"
  if [ "$dry_run" != true ] && [ "${publish_results:-true}" = true ]; then cp "$exp_dir/RESULTS.md" "$recipe/RESULTS.md"; fi
}

stage_11() {
  local streaming_export=()  # sherpa-onnx OnlineRecognizer files for the first streaming_eval_chunks entry
  if [ "${streaming:-false}" = true ]; then
    streaming_export=(--streaming-chunk-size "${streaming_eval_chunks%%,*}"
                      --streaming-left-context-frames "${streaming_eval_left_context:-64}")
  fi
  # ONNX in sherpa-onnx's layouts: encoder/decoder/joiner (+ tokens.txt), tagger.onnx, speaker.onnx.
  run python3 local/export.py --exp-dir "$exp_dir/mt2kd" --avg "$avg" --use-averaged-model "$(student_weights)" --lang-dir "$lang_dir" \
    --manifest-dir "$manifest_dir" --out-dir "$exp_dir/mt2kd/onnx" "${streaming_export[@]}"
}


log "recipe=$recipe data_dir=$data_dir exp_dir=$exp_dir stages $stage..$stop_stage${dry_run:+ (dry run: $dry_run)}"
run_stage 0
# After install, use the project's virtualenv and put the repo on PYTHONPATH.
. ./path.sh
for n in 1 2 3; do run_stage "$n"; done
# Stage 8 (baselines) needs only the data; stages 4-7 (teachers, dump, KD, fine-tuning) are one chain. With
# train_jobs >= 2 the baselines run in the background at the lowest CPU priority (nice 19): they take the cores the
# chain leaves idle (after the shorter teacher finishes; beside KD and fine-tuning, which use one core) and hardly
# slow the chain down. Every job is single-threaded and seeded: the schedule changes no result.
chain=(4 5 6 7)
if [ "${ablations:-false}" = true ]; then  # the ablations (stage 8) distil from stage 5's dumps: start after it
  for n in 4 5; do run_stage "$n"; done
  chain=(6 7)
fi
if [ "${train_jobs:-1}" -ge 2 ] && [ "$dry_run" != true ] && stage_selected 8 \
   && ( for n in "${chain[@]}"; do stage_selected "$n" && exit 0; done; exit 1 ); then
  ( renice -n 19 -p "$BASHPID" > /dev/null; run_stage 8 ) &
  baselines_pid=$!
  log "Stage 8 (baselines) runs in the background (pid $baselines_pid, nice 19) alongside stages ${chain[*]}"
  # In the background and waited for, not `( ... ) || chain_ok=false`: a subshell in an || list runs without set -e,
  # so a failed stage would not stop the chain.
  ( for n in "${chain[@]}"; do run_stage "$n"; done ) &
  chain_ok=true
  wait $! || chain_ok=false
  wait "$baselines_pid" 2>/dev/null || true  # the baselines finish even when the chain failed: their work is kept
  for n in "${chain[@]}" 8; do
    if stage_selected "$n" && [ ! -f "$(marker "$n")" ]; then log "Stage $n (${stage_names[$n]}) failed"; exit 1; fi
  done
  $chain_ok || exit 1
else
  for n in "${chain[@]}" 8; do run_stage "$n"; done
fi
for n in 9 10 11; do run_stage "$n"; done
log "all selected stages finished"
