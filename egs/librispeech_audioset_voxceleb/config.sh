# Settings for egs/librispeech_audioset_voxceleb (the paper's setup). Sourced by run.sh and prepare.sh.
# Every variable can be overridden from the environment, e.g.  librispeech_dir=/data/ls bash run.sh

# ---- corpora ----
# Where the corpora are (official layouts; see mt2kd_lib/data/corpora/*.py). A corpus whose folder does not
# exist is left out (unless download_corpora=true, which fetches what lhotse can: LibriSpeech, VoxCeleb, MUSAN).
dl_dir=${dl_dir:-download}
librispeech_dir=${librispeech_dir:-$dl_dir/librispeech}     # holds LibriSpeech/<part>/...
audioset_dir=${audioset_dir:-$dl_dir/audioset}              # *_segments.csv + class_labels_indices.csv (+ wavs)
audioset_audio_dir=${audioset_audio_dir:-}                  # wavs elsewhere (<ytid>[_<start>_<end>].wav); empty: audioset_dir
voxceleb1_dir=${voxceleb1_dir:-$dl_dir/voxceleb1}           # wav/<spk>/<video>/<n>.wav, vox1_meta.csv, trial lists
voxceleb2_dir=${voxceleb2_dir:-$dl_dir/voxceleb2}           # dev/aac/... (m4a needs ffmpeg; wav-converted works), vox2_meta.csv
voxceleb_trials_dir=${voxceleb_trials_dir:-}                # trial lists elsewhere; empty: voxceleb1_dir
musan_dir=${musan_dir:-$dl_dir/musan}                       # holds musan/{music,noise,speech}
# Corpus parts to use, comma lists (defaults = the paper's: 960 h ASR, AudioSet balanced+unbalanced, VoxCeleb2 dev
# for SV training). A part that is not listed need not be on disk; a listed part that is missing stops stage 1
# before anything is written. E.g. librispeech_train_parts=train-clean-100 librispeech_dev_parts=dev-clean.
librispeech_train_parts=${librispeech_train_parts:-train-clean-100,train-clean-360,train-other-500}
librispeech_dev_parts=${librispeech_dev_parts-dev-clean,dev-other}
librispeech_test_parts=${librispeech_test_parts-test-clean,test-other}
audioset_train_parts=${audioset_train_parts:-balanced,unbalanced}    # balanced: AT train = balanced only
audioset_eval_parts=${audioset_eval_parts-eval}                # dev/test/eval lists may be set empty: none
voxceleb1_parts=${voxceleb1_parts:-dev,test}                # test: O trials; dev: E/H trials (VoxCeleb1 sets)
voxceleb2_parts=${voxceleb2_parts:-dev}                     # dev,test: train on every VoxCeleb2 speaker
musan_parts=${musan_parts:-music,noise,speech}
voxceleb1_dev_in_train=${voxceleb1_dev_in_train:-false}     # true: add VoxCeleb1 dev to SV train (then O trials only)
sv_trials=${sv_trials:-auto}                                # auto (every list found) or e.g. O-clean,E-clean,H-clean
download_corpora=${download_corpora:-false}

# ---- lang ----
vocab_size=${vocab_size:-500}                               # BPE pieces (icefall LibriSpeech: 500)

# ---- teachers (stage 4): official checkpoints, loaded and checked, then dumped over the KD pool (stage 5) ----
teachers_mode=${teachers_mode:-pretrained}
teachers_config=${teachers_config:-$recipe/conf/teachers.yaml}
kd_teachers=${kd_teachers:-whisper,beats,ecapa}
kd_teacher_tasks=${kd_teacher_tasks:-asr,at,sv}
kd_mask_by_task=${kd_mask_by_task:-true}                  # false: every KD loss on every cut (egs/mini/RESULTS_NOTES.md)

# ---- student, KD and fine-tuning (stages 6-8) ----
# icefall's LibriSpeech Zipformer-M settings where the paper gives none: ScaledAdam base lr 0.045, Eden
# lr_batches 7500 / lr_epochs 3.5, max-duration 1000 s per GPU. Run with GPUs (torchrun / --world-size).
student_config=${student_config:-$recipe/conf/student_m.yaml}
max_duration=${max_duration:-1000}
kd_epochs=${kd_epochs:-30}
finetune_epochs=${finetune_epochs:-30}
finetune_encoder_lr_scale=${finetune_encoder_lr_scale:-0.5}
finetune_freeze_encoder_steps=${finetune_freeze_encoder_steps:-0}   # stage 2: encoder not updated in the first N batches (heads only)
finetune_at_soft_labels=${finetune_at_soft_labels:-false}           # true: stage-2 AT targets = the AT teacher's (beats) dumped probabilities
ablations=${ablations:-false}
train_jobs=${train_jobs:-1}
avg=${avg:-5}
average_period=${average_period:-200}                     # icefall's model_avg period
use_averaged_model=${use_averaged_model:-true}            # icefall decodes the mean weights of the last avg epochs
publish_results=${publish_results:-true}
# streaming MT2KD student (issue 15; icefall's zipformer streaming defaults, 50 Hz frames, see egs/mini/config.sh)
streaming=${streaming:-false}
chunk_size=${chunk_size:-16,32,64,-1}
left_context_frames=${left_context_frames:-64,128,256,-1}
streaming_eval_chunks=${streaming_eval_chunks:-16,32}
streaming_eval_left_context=${streaming_eval_left_context:-128}
world_size=${world_size:-8}                                 # GPUs per training run (DDP); multi-node: torchrun
use_musan=${use_musan:-true}                                # MUSAN noise mixing in KD and fine-tuning
dump_jobs=${dump_jobs:-8}                                   # teacher-dump workers, one per device below
dump_devices=${dump_devices:-cuda:0,cuda:1,cuda:2,cuda:3,cuda:4,cuda:5,cuda:6,cuda:7}
lr_warmup_batches=${lr_warmup_batches:-500}                 # icefall defaults
warm_step=${warm_step:-2000}
