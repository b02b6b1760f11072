"""Start a student (stage 1 KD or stage 2 / single-task training) from an icefall Zipformer2 checkpoint.

``encoder``: the encoder (Conv2dSubsampling + Zipformer2) only; any vocabulary. ``all``: also the transducer head
(decoder, joiner, simple projections, CTC output), which is only meaningful when the checkpoint's BPE model gives
every token the id the recipe's does, so that is checked first (:func:`mt2kd_lib.data.bpe.bpe_difference`).
"""

import argparse
from pathlib import Path
from typing import Dict, Optional, Union

from torch import nn

from mt2kd_lib.data.bpe import bpe_difference
from mt2kd_lib.models.icefall_convert import load_icefall_weights

PARTS = ("encoder", "all")


def init_from_icefall(model: nn.Module, checkpoint: Union[str, Path], parts: str = "encoder",
                      icefall_bpe: Optional[Path] = None, recipe_bpe: Optional[Path] = None) -> Dict[str, int]:
    """Load ``parts`` of an icefall checkpoint into ``model``; returns tensors loaded per part."""
    if parts not in PARTS:
        raise ValueError(f"icefall init: parts must be one of {PARTS}, got {parts!r}")
    if parts == "all":
        if icefall_bpe is None or recipe_bpe is None:
            raise ValueError("icefall init with the transducer head (parts 'all') needs the checkpoint's bpe.model "
                             "(--icefall-bpe) and the recipe's, to check that both use the same tokens")
        diff = bpe_difference(Path(icefall_bpe), Path(recipe_bpe))
        if diff is not None:
            raise ValueError(f"icefall init: the checkpoint's BPE model differs from the recipe's ({diff}); "
                             f"its transducer head cannot be reused -- initialise the encoder only")
    return load_icefall_weights(model, checkpoint, parts)


def add_icefall_init_args(p: argparse.ArgumentParser, with_head: bool = True) -> None:
    """``--init-from-icefall PATH`` (and, where the model has a transducer head, which parts and the BPE check)."""
    p.add_argument("--init-from-icefall", type=Path, default=None,
                   help="start from this icefall Zipformer2 checkpoint (epoch-N.pt, pretrained.pt or an averaged "
                        "state_dict); its encoder must be the model config's preset")
    if with_head:
        p.add_argument("--init-from-icefall-parts", choices=PARTS, default="encoder",
                       help="all: also the transducer head (needs --icefall-bpe equal to the recipe's bpe.model)")
        p.add_argument("--icefall-bpe", type=Path, default=None, help="the icefall checkpoint's bpe.model")
