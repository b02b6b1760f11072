"""Pure-torch Zipformer2 encoder (icefall design): see ``model.EncoderWithEmbed``."""

from mt2kd_lib.models.zipformer.encoder import Zipformer2
from mt2kd_lib.models.zipformer.model import EncoderWithEmbed
from mt2kd_lib.models.zipformer.scaling import ScheduledFloat, set_batch_count
from mt2kd_lib.models.zipformer.subsampling import Conv2dSubsampling

__all__ = ["Zipformer2", "EncoderWithEmbed", "Conv2dSubsampling", "ScheduledFloat", "set_batch_count"]
