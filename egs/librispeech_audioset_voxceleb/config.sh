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
# Split choices (paper: 960 h ASR, AudioSet balanced+unbalanced, VoxCeleb2 dev for SV training).
librispeech_train_100=${librispeech_train_100:-false}       # true: ASR train = train-clean-100 only
audioset_full=${audioset_full:-true}                        # false: AT train = balanced only
voxceleb1_dev_in_train=${voxceleb1_dev_in_train:-false}     # true: add VoxCeleb1 dev to SV train (then O trials only)
sv_trials=${sv_trials:-auto}                                # auto (every list found) or e.g. O-clean,E-clean,H-clean
download_corpora=${download_corpora:-false}

# ---- lang ----
vocab_size=${vocab_size:-500}                               # BPE pieces (icefall LibriSpeech: 500)
