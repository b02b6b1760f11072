# egs/mini: the synthetic default corpus. Sourced by run.sh; every setting can be overridden from the
# environment or the command line (e.g. `bash run.sh --corpus-config egs/mini/conf/corpus_tiny.yaml`).

# ---- corpus ----
corpus_config=${corpus_config:-$recipe/conf/corpus.yaml}   # sizes and seed of the synthetic corpus
vocab_size=${vocab_size:-256}                              # BPE pieces asked for (the grammar supports fewer)

# ---- teachers (stage 4) ----
teachers_mode=${teachers_mode:-train}                      # train: recipe-trained teachers (below)
teacher_config=${teacher_config:-$recipe/conf/student_tiny.yaml}  # teacher_xs.yaml: larger, slower
teacher_epochs=${teacher_epochs:-2}                        # on train + teacher_extra: 4x a student's updates
# auto: the lower SV dev EER of the recipe-trained SV teacher (checkpoint; it also sees sv teacher_extra) and
# resemblyzer's pretrained encoder (resemblyzer). Measured: dev EER 5.80 against 12.5%, so auto keeps checkpoint.
sv_teacher=${sv_teacher:-auto}
kd_teachers=${kd_teachers:-asr_teacher,at_teacher,sv_teacher}
kd_teacher_tasks=${kd_teacher_tasks:-asr,at,sv}                   # the task of each KD teacher (task-ID masking)
kd_mask_by_task=${kd_mask_by_task:-true}                  # false: every KD loss on every cut (see RESULTS_NOTES.md)
# mvq: the ASR teacher's frames as codebook indexes, cross-entropy KD (dev WER 16.2% against 24.5% with l1 = L1 on
# lilcom floats, same teachers and seeds; RESULTS_NOTES.md). Empty: teachers.yaml's 'target', else l1.
kd_frame_target=${kd_frame_target:-mvq}
mvq_num_codebooks=${mvq_num_codebooks:-8}                  # mvq: uint8 codebook indexes per frame (bytes per frame)
mvq_train_iters=${mvq_train_iters:-400}                    # mvq: quantizer training steps (128 frames each)

# ---- student, KD and fine-tuning (stages 6-8) ----
student_config=${student_config:-$recipe/conf/student_tiny.yaml}
# Small batches and short warm-ups: on a CPU the number of updates, not the batch size, limits learning.
max_duration=${max_duration:-20}                           # seconds of audio per batch (3x the updates of 60 s, +15% time)
lr_warmup_batches=${lr_warmup_batches:-100}                # Eden warm-up
warm_step=${warm_step:-200}                                # transducer simple/pruned loss warm-up
model_warmup_batches=${model_warmup_batches:-100}          # Zipformer layer-skip warm-up (icefall: 4000; 500 before, see RESULTS_NOTES.md)
spec_augment=${spec_augment:-false}                        # SpecAugment in training (off: a few epochs underfit, see RESULTS_NOTES.md)
kd_epochs=${kd_epochs:-1}
finetune_epochs=${finetune_epochs:-2}                      # the same budget for every student (fair baselines); MT2KD dev WER
                                                           # 49.0% after 1 epoch, 20.0% after 2 (RESULTS_NOTES.md)
finetune_encoder_lr_scale=${finetune_encoder_lr_scale:-0.5}
finetune_freeze_encoder_steps=${finetune_freeze_encoder_steps:-200} # stage 2: heads only for the first N batches (EER 28.4 -> 24.5%)
finetune_at_soft_labels=${finetune_at_soft_labels:-false}           # true: stage-2 AT targets = the AT teacher's dumped probabilities
ablations=${ablations:-false}                              # true: KD with each teacher alone, KD without masking
train_jobs=${train_jobs:-2}                                # trainings side by side (1 thread each); baselines beside them at nice 19
avg=${avg:-1}                                              # epochs averaged for evaluation (and the trained teachers)
# The mean weights of the last epoch (icefall's model_avg, folded in every average_period batches) instead of the
# last weights: the learning rate is still flat when these short runs end, so the last weights are noisy (MT2KD
# dev WER 27.7-32.7% -> 4.8-5.7% over two stage-2 seeds; RESULTS_NOTES.md).
average_period=${average_period:-25}
use_averaged_model=${use_averaged_model:-true}
# ... but the mean weights hurt a student still breaking through (single-task ASR dev WER ~50% last, ~80% mean), so
# each student is evaluated with whichever of the two has the lower dev error (stage 9; export and streaming take
# MT2KD's choice). The teachers keep use_averaged_model: their dumped outputs came from those weights.
choose_weights_on_dev=${choose_weights_on_dev:-true}
# Stage 9 ASR decoding: "all" (every method; RESULTS.md then gets the decoding table) takes 2.8x the ASR decoding
# time of greedy search (~+3 min of stage 9 on the 2-core machine, see RESULTS_NOTES.md), so the default is greedy.
decoding_methods=${decoding_methods:-greedy_search}
eval_dev=${eval_dev:-true}                                 # stage 9 also scores dev (ASR dev, SV dev trials): the numbers to choose on
publish_results=${publish_results:-true}                   # stage 10 copies RESULTS.md into the recipe folder
# ---- streaming (issue 15) ----
streaming=${streaming:-false}                              # true: causal MT2KD student (KD + fine-tuning) trained with random chunks
chunk_size=${chunk_size:-16,32,64,-1}                      # training chunk sizes, 50 Hz frames (-1: full context), one per batch
left_context_frames=${left_context_frames:-64,128,256,-1}  # training left contexts, 50 Hz frames, one per batch
streaming_eval_chunks=${streaming_eval_chunks:-16,32}      # stage 9 streaming decoding: 320 ms and 640 ms chunks
streaming_eval_left_context=${streaming_eval_left_context:-64} # its left context (50 Hz frames)
