# egs/mini with longer training, for lower absolute error rates than the ~30 min default (same corpus):
#   bash run.sh --recipe-config egs/mini/config_long.sh --exp-dir exp/mini_long
# Larger teachers (xs, twice the student's width), the SV teacher chosen by EER between the recipe-trained one
# and resemblyzer, and four epochs of KD, fine-tuning and baselines. 64 min 43 s on the 2-core CPU from a fresh
# clone (commit 735bc75, install included; egs/mini/RESULTS_long.md).
teacher_config=${teacher_config:-$recipe/conf/teacher_xs.yaml}
teacher_epochs=${teacher_epochs:-6}
sv_teacher=${sv_teacher:-auto}
kd_epochs=${kd_epochs:-4}
finetune_epochs=${finetune_epochs:-4}
model_warmup_batches=${model_warmup_batches:-2000}
# shellcheck source=config.sh
. "$recipe/config.sh"
