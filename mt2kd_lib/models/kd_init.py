"""Stage 2 starts from stage 1: copy the KD student's encoder, and turn KD heads into task heads where the
shapes match (the AT teacher's head becomes the AT head when both predict the same classes; the SV teacher's
pooling + embedding layers become the SV head's, whose speaker classifier stays new)."""

import logging
from pathlib import Path
from typing import Dict, List, Union

import torch

from mt2kd_lib.models.student import StudentModel


def _load_matching(dst: torch.nn.Module, src_state: Dict[str, torch.Tensor], what: str) -> List[str]:
    """Copy every tensor of ``src_state`` whose name and shape exist in ``dst``; returns the copied names."""
    own = dst.state_dict()
    take = {k: v for k, v in src_state.items() if k in own and own[k].shape == v.shape}
    own.update(take)
    dst.load_state_dict(own)
    skipped = sorted(set(src_state) - set(take))
    if skipped:
        logging.info(f"{what}: {len(skipped)} tensors not copied (no same-shaped target), e.g. {skipped[:3]}")
    return sorted(take)


def check_sv_head_matches_teachers(model_cfg: dict, teachers: List[dict]) -> List[str]:
    """Stage 1, before training: the SV teachers whose embedding dim differs from the student's SV head
    (``heads.sv.emb_dim``), each warned about now, since stage 2 could not start from that distilled head."""
    emb_dim = ((model_cfg.get("heads") or {}).get("sv") or {}).get("emb_dim")
    off = [t for t in teachers if t["task"] == "sv" and t["kind"] != "frame" and emb_dim is not None
           and int(t["dim"]) != int(emb_dim)]
    for t in off:
        logging.warning(f"SV teacher {t['name']} gives {t['dim']}-d embeddings but the student's heads.sv.emb_dim is "
                        f"{emb_dim}: stage 2 will start its SV head fresh instead of from this KD head. Set emb_dim "
                        f"to {t['dim']} in the student's yaml to transfer it")
    return [t["name"] for t in off]


def init_from_kd_checkpoint(student: StudentModel, path: Union[str, Path], weights: str = "last") -> Dict[str, int]:
    """Load the encoder (all of it must match) and whichever KD heads fit; returns counts per part.

    ``weights``: "last" (the checkpoint's ``model``) or "mean" (its ``model_avg``, icefall's running mean of the
    weights since the start of KD, which the trainer keeps every ``--average-period`` batches)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if weights not in ("last", "mean"):
        raise ValueError(f"init_from_kd_checkpoint: weights {weights!r} is neither 'last' nor 'mean'")
    if weights == "mean" and ckpt.get("model_avg") is None:
        raise ValueError(f"{path} has no model_avg (mean weights): train KD with --average-period > 0, or start "
                         "stage 2 from its last weights")
    state = ckpt["model_avg"] if weights == "mean" else ckpt["model"]
    kd_cfg = (ckpt.get("model_config") or {}).get("kd", {})
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    own = student.encoder.state_dict()
    other = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in enc.items() if k in own
             and own[k].shape != v.shape]
    if other:
        raise ValueError(f"{path}: the KD encoder does not match the student's (other shapes: {other[:3]}); use the "
                         "same encoder preset in both stages")
    missing, unexpected = student.encoder.load_state_dict(enc, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: the KD encoder does not match the student's (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); use the same encoder preset in both stages")
    counts = {"encoder": len(enc)}
    for t in kd_cfg.get("teachers", []):
        prefix = f"kd_heads.{t['name']}."
        head_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        target = {"at": student.at_head, "sv": student.sv_head}.get(t["task"])
        if target is None or t["kind"] == "frame":
            continue
        copied = _load_matching(target, head_state, f"KD head {t['name']}")
        counts[f"{t['task']}_head_from_{t['name']}"] = len(copied)
        if len(copied) < len(head_state):
            # The distilled pooling/embedding is what stage 2 should start from; a head of another shape
            # silently starts fresh (egs/mini lost ~5 EER points this way), so say how to make them match.
            logging.warning(f"{path}: the {t['task']} head keeps {len(head_state) - len(copied)} of the KD head "
                            f"{t['name']}'s {len(head_state)} tensors untransferred (shapes differ): give heads."
                            f"{t['task']} the KD head's sizes (sv: emb_dim = the teacher's dim {t['dim']}, "
                            f"attention_channels 128) to start stage 2 from the distilled head")
    logging.info(f"initialised from {path} ({weights} weights): {counts}")
    return counts


def distilled_head_modules(student: StudentModel, counts: Dict[str, int]) -> List[torch.nn.Module]:
    """The head parts ``init_from_kd_checkpoint`` filled from KD heads (its ``counts``): the whole AT head, and the
    SV head's pooling and embedding (its speaker classifier is always new)."""
    out: List[torch.nn.Module] = []
    if any(k.startswith("at_head_from_") and n for k, n in counts.items()):
        out.append(student.at_head)
    if any(k.startswith("sv_head_from_") and n for k, n in counts.items()):
        out += [m for name, m in student.sv_head.named_children() if name != "classifier"]
    return out
