"""Synthetic sound-event classes and multi-label clips (1..K events mixed at random levels and positions).

Each class is a parametric generator with random parameters, so examples of one class vary but stay
recognisable. ``speech`` uses the TTS voices, so the AT task overlaps the ASR/SV domains as AudioSet does.
"""

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

SR = 16000


def _envelope(n: int, attack: float, release: float) -> np.ndarray:
    t = np.arange(n) / SR
    env = np.minimum(1.0, t / max(attack, 1e-3)) * np.minimum(1.0, (n / SR - t) / max(release, 1e-3))
    return np.clip(env, 0.0, 1.0)


def _normalise(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(x**2)) + 1e-8
    return (x / rms * 0.1).astype(np.float32)


def beep(rng, n):
    f = rng.uniform(500, 2500)
    on = int(rng.uniform(0.08, 0.25) * SR)
    period = on + int(rng.uniform(0.1, 0.3) * SR)
    t = np.arange(n) / SR
    gate = (np.arange(n) % period) < on
    return np.sin(2 * np.pi * f * t) * gate


def sweep_up(rng, n):
    f0, f1 = rng.uniform(200, 800), rng.uniform(2000, 6000)
    t = np.arange(n) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return np.sin(phase)


def sweep_down(rng, n):
    return sweep_up(rng, n)[::-1].copy()


def knock(rng, n):
    out = np.zeros(n)
    f = rng.uniform(150, 600)
    gap = int(rng.uniform(0.15, 0.4) * SR)
    decay = np.exp(-np.arange(int(0.12 * SR)) / (0.015 * SR)) * np.sin(2 * np.pi * f * np.arange(int(0.12 * SR)) / SR)
    for start in range(int(rng.uniform(0, 0.1) * SR), n - decay.size, gap):
        out[start : start + decay.size] += decay
    return out


def hum(rng, n):
    base = rng.choice([50.0, 60.0]) * rng.uniform(0.97, 1.03)
    t = np.arange(n) / SR
    return sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 6))


def _coloured_noise(rng, n, exponent: float):
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / SR), 1.0)
    return np.fft.irfft(spec / freqs ** (exponent / 2), n)


def white_noise(rng, n):
    return rng.standard_normal(n)


def pink_noise(rng, n):
    return _coloured_noise(rng, n, 1.0)


def brown_noise(rng, n):
    return _coloured_noise(rng, n, 2.0)


def chord(rng, n):
    root = rng.uniform(180, 450)
    t = np.arange(n) / SR
    ratios = [1.0, 1.26, 1.5] if rng.random() < 0.5 else [1.0, 1.19, 1.5]
    return sum(np.sin(2 * np.pi * root * r * t) for r in ratios) * _envelope(n, 0.05, 0.3)


def siren(rng, n):
    t = np.arange(n) / SR
    centre, depth, rate = rng.uniform(600, 1200), rng.uniform(150, 400), rng.uniform(0.5, 2.0)
    inst = centre + depth * np.sin(2 * np.pi * rate * t)
    return np.sin(2 * np.pi * np.cumsum(inst) / SR)


def clicks(rng, n):
    out = np.zeros(n)
    rate = rng.uniform(8, 30)
    idx = np.cumsum(rng.exponential(SR / rate, size=int(rate * n / SR * 2) + 4)).astype(int)
    out[idx[idx < n]] = rng.choice([-1.0, 1.0], size=(idx < n).sum())
    return np.convolve(out, np.hanning(16), mode="same")


def bell(rng, n):
    f = rng.uniform(300, 900)
    t = np.arange(n) / SR
    partials = [1.0, 2.76, 5.40, 8.93]
    tone = sum(np.exp(-t * (1.5 + k)) * np.sin(2 * np.pi * f * p * t) / (k + 1) for k, p in enumerate(partials))
    return tone


def engine(rng, n):
    t = np.arange(n) / SR
    rpm = rng.uniform(20, 45)
    noise = _coloured_noise(rng, n, 1.6)
    return noise * (1.0 + 0.8 * np.sin(2 * np.pi * rpm * t)) + 0.5 * np.sin(2 * np.pi * rpm * 2 * t)


def bird(rng, n):
    out = np.zeros(n)
    chirp_len = int(rng.uniform(0.05, 0.12) * SR)
    f0 = rng.uniform(2500, 4500)
    tc = np.arange(chirp_len) / SR
    chirp = np.sin(2 * np.pi * (f0 * tc + rng.uniform(-8000, 8000) * tc**2)) * np.hanning(chirp_len)
    start = 0
    while start + chirp_len < n:
        out[start : start + chirp_len] += chirp
        start += chirp_len + int(rng.uniform(0.03, 0.4) * SR)
    return out


# Class name -> (AudioSet-style mid, generator). "speech" is produced by the caller's TTS function.
EVENT_CLASSES: Dict[str, Tuple[str, Optional[Callable]]] = {
    "speech": ("/m/mini_speech", None),
    "beep": ("/m/mini_beep", beep),
    "sweep_up": ("/m/mini_sweep_up", sweep_up),
    "sweep_down": ("/m/mini_sweep_down", sweep_down),
    "knock": ("/m/mini_knock", knock),
    "hum": ("/m/mini_hum", hum),
    "white_noise": ("/m/mini_white_noise", white_noise),
    "pink_noise": ("/m/mini_pink_noise", pink_noise),
    "brown_noise": ("/m/mini_brown_noise", brown_noise),
    "chord": ("/m/mini_chord", chord),
    "siren": ("/m/mini_siren", siren),
    "clicks": ("/m/mini_clicks", clicks),
    "bell": ("/m/mini_bell", bell),
    "engine": ("/m/mini_engine", engine),
    "bird": ("/m/mini_bird", bird),
}
CLASS_NAMES: List[str] = list(EVENT_CLASSES)


def draw_labels(rng: np.random.Generator, max_events: int) -> List[int]:
    """1..max_events distinct class indices (drawn first, so labels are known without rendering audio)."""
    k = int(rng.integers(1, max_events + 1))
    return sorted(int(i) for i in rng.choice(len(CLASS_NAMES), size=k, replace=False))


def render_clip(
    rng: np.random.Generator,
    labels: List[int],
    seconds: float,
    speech_fn: Callable[[np.random.Generator], np.ndarray],
) -> np.ndarray:
    """Mix one sound of each labelled class at random offsets and levels (+-10 dB) into a clip."""
    n = int(seconds * SR)
    clip = np.zeros(n)
    for label in labels:
        name = CLASS_NAMES[label]
        length = int(rng.uniform(0.4, 1.0) * n)
        gen = EVENT_CLASSES[name][1]
        sound = speech_fn(rng)[:length] if gen is None else gen(rng, length) * _envelope(length, 0.01, 0.05)
        sound = _normalise(sound) * 10 ** (rng.uniform(-10, 10) / 20)
        start = int(rng.integers(0, n - sound.size + 1))
        clip[start : start + sound.size] += sound
    clip += 0.002 * rng.standard_normal(n)  # a faint noise floor: no digital silence
    peak = np.abs(clip).max()
    if peak > 0.99:
        clip *= 0.99 / peak
    return clip.astype(np.float32)
