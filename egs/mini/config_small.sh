# egs/mini at a size whose whole pipeline runs in about an hour on a 2-core CPU:
#   bash run.sh --recipe-config egs/mini/config_small.sh --data-dir data/mini_small --exp-dir exp/mini_small
corpus_config=${corpus_config:-$recipe/conf/corpus_small.yaml}
teacher_epochs=${teacher_epochs:-4}
kd_epochs=${kd_epochs:-3}
finetune_epochs=${finetune_epochs:-3}
# shellcheck source=config.sh
. "$recipe/config.sh"
