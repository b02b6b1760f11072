# A minutes-long version of the whole egs/mini pipeline (used by the tests):
#   bash run.sh --recipe-config egs/mini/config_tiny.sh --data-dir /tmp/t/data --exp-dir /tmp/t/exp
corpus_config=${corpus_config:-$recipe/conf/corpus_tiny.yaml}
vocab_size=${vocab_size:-64}
teacher_epochs=${teacher_epochs:-1}
kd_epochs=${kd_epochs:-1}
finetune_epochs=${finetune_epochs:-1}
average_period=${average_period:-1}        # a few batches per run: every batch is folded into model_avg
use_averaged_model=${use_averaged_model:-true}
sv_teacher=${sv_teacher:-checkpoint}
publish_results=${publish_results:-false}
max_duration=${max_duration:-60}
mvq_train_iters=${mvq_train_iters:-40}  # the MVQ quantizer: a few steps (its quality is tested in test_mvq.py)
finetune_freeze_encoder_steps=${finetune_freeze_encoder_steps:-2}  # a few batches in all: frozen, then trained
# shellcheck source=config.sh
. "$recipe/config.sh"
