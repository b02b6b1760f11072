"""Frame rates of the fbank input and of the Zipformer2 encoder output, defined once.

They live in the data layer because it is the lowest one that needs them (cut filtering); models/, teachers/ and
export/ import them from here, so the layers keep pointing one way (models -> data, never back).
"""

from typing import TypeVar

FBANK_FRAME_SHIFT = 0.01  # 100 Hz fbank
ENCODER_FRAME_SHIFT = 0.04  # Zipformer2 output: 25 Hz (Conv2dSubsampling /2, then /2 at the output)
MIN_INPUT_FRAMES = 9  # (9 - 7) // 2 = 1 output frame of Conv2dSubsampling

IntLike = TypeVar("IntLike")  # an int, or a tensor (traced as shape arithmetic in the ONNX export)


def encoder_output_frames(num_frames: IntLike) -> IntLike:
    """25 Hz encoder frames of a ``num_frames`` 100 Hz input (Conv2dSubsampling then /2, as icefall)."""
    return (((num_frames - 7) // 2) + 1) // 2
