"""mt2kd: one general-purpose speech/audio encoder for ASR, audio tagging and speaker verification,
trained by multi-teacher knowledge distillation followed by multi-task fine-tuning (MT2KD)."""

__version__ = "0.1.0"
