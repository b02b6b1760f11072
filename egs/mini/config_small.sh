# egs/mini at a size whose whole pipeline runs in about half an hour on a 2-core CPU (egs/mini/RESULTS.md):
#   bash run.sh --recipe-config egs/mini/config_small.sh --data-dir data/mini_small --exp-dir exp/mini_small
corpus_config=${corpus_config:-$recipe/conf/corpus_small.yaml}
# Teachers as large as the student here (time); they are stronger through 3x the labelled data and more epochs.
teacher_config=${teacher_config:-$recipe/conf/student_tiny.yaml}
teacher_epochs=${teacher_epochs:-6}
kd_epochs=${kd_epochs:-4}
finetune_epochs=${finetune_epochs:-4}
# shellcheck source=config.sh
. "$recipe/config.sh"
