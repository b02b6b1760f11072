"""Synthetic speakers: each is one voice configuration of espeak-ng (voice x variant x pitch x rate) or flite
(voice x playback-rate factor). Speakers are drawn without repeating a (voice, variant) pair, so different
speakers differ in more than pitch."""

from dataclasses import dataclass
from typing import List

import numpy as np

ESPEAK_VOICES = ["en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029"]
# espeak-ng variants, minus whispered, test-only and effect-heavy ones that are hard to understand.
ESPEAK_VARIANTS = (
    "Adam Alex Alicia Andrea Andy Annie Antonio Auntie Belinda Benjamin Boris Caleb David Denis Diogo Ed Edward "
    "Edward2 Gene Gene2 Gustave Henrique Hugo Iven Iven2 Iven3 Iven4 Jacky John Lee Linda Marcelo Marco Mario Max "
    "Michael Michel Miguel Mike Mr_Serious Nguyen Pablo Paul Pedro Quincy RicishayMax RicishayMax2 RicishayMax3 "
    "Rob Robert Steph Steph2 Steph3 Storm Tweaky Zac anika anxiousAndy female2 female3 female4 female5 grandpa "
    "klatt klatt2 klatt3 klatt4 klatt5 klatt6 male2 male3 male4 male5 male6 male7 norbert sandro shelby travis "
    "victor male8 female1 male1 grandma"
).split()
FLITE_VOICES = ["awb", "rms", "slt", "kal16"]
FLITE_RATE_FACTORS = [0.88, 0.94, 1.0, 1.06, 1.12]


@dataclass(frozen=True)
class Speaker:
    id: str
    engine: str  # "espeak" or "flite"
    voice: str
    variant: str = ""
    pitch: int = 50  # espeak -p, 0..99
    rate: int = 160  # espeak -s, words per minute
    rate_factor: float = 1.0  # flite: resampling factor (changes pitch and tempo together)

    @property
    def description(self) -> str:
        if self.engine == "espeak":
            return f"espeak-ng {self.voice}+{self.variant} pitch {self.pitch} rate {self.rate}"
        return f"flite {self.voice} x{self.rate_factor}"


def draw_speakers(seed: int, n: int) -> List[Speaker]:
    """``n`` distinct speakers in a deterministic order (flite voices make up about 10% of them)."""
    rng = np.random.default_rng([seed, 17])
    pairs = [(v, var) for v in ESPEAK_VOICES for var in ESPEAK_VARIANTS]
    order = rng.permutation(len(pairs))
    flite = [(v, f) for v in FLITE_VOICES for f in FLITE_RATE_FACTORS]
    flite = [flite[i] for i in rng.permutation(len(flite))]
    if n > len(pairs) + len(flite):
        raise ValueError(f"asked for {n} speakers; at most {len(pairs) + len(flite)} distinct ones exist")
    speakers: List[Speaker] = []
    e = f = 0
    for k in range(n):
        use_flite = f < len(flite) and (k % 10 == 9 or e >= len(pairs))
        sid = f"spk{k:04d}"
        if use_flite:
            voice, factor = flite[f]
            f += 1
            speakers.append(Speaker(sid, "flite", voice, rate_factor=factor))
        else:
            voice, variant = pairs[order[e]]
            e += 1
            pitch = int(rng.integers(25, 75))
            rate = int(rng.integers(135, 185))
            speakers.append(Speaker(sid, "espeak", voice, variant, pitch, rate))
    return speakers
