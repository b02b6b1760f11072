"""Speech synthesis with espeak-ng and flite, resampled to 16 kHz mono float32."""

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from mt2kd_lib.data.mini.speakers import Speaker

SAMPLING_RATE = 16000


def _to_16k(audio: np.ndarray, sr: int, factor: float = 1.0) -> np.ndarray:
    """Resample ``sr`` -> 16 kHz; ``factor`` > 1 plays faster and higher (a different voice)."""
    src = sr * factor
    up, down = 16000, int(round(src))
    g = np.gcd(up, down)
    return resample_poly(audio, up // g, down // g).astype(np.float32)


def synthesize(text: str, speaker: Speaker) -> np.ndarray:
    """Speak ``text`` (lower case words) as ``speaker``; returns 16 kHz float32 audio."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if speaker.engine == "espeak":
            cmd = ["espeak-ng", "-v", f"{speaker.voice}+{speaker.variant}", "-p", str(speaker.pitch),
                   "-s", str(speaker.rate), "-w", str(wav), text]
        elif speaker.engine == "flite":
            cmd = ["flite", "-voice", speaker.voice, "-t", text, "-o", str(wav)]
        else:
            raise ValueError(f"speaker {speaker.id}: unknown engine {speaker.engine!r}")
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise RuntimeError(f"{cmd[0]} is not installed; run tools/install.sh (it installs espeak-ng, flite, sox)")
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"speaker {speaker.id} ({speaker.description}) failed on {text!r}: {e.stderr!r}")
        audio, sr = sf.read(str(wav), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if audio.size == 0:
        raise RuntimeError(f"speaker {speaker.id} ({speaker.description}) produced no audio for {text!r}")
    return _to_16k(audio, sr, speaker.rate_factor)
