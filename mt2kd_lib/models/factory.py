"""Build a :class:`StudentModel` from a yaml/dict config, and keep that config inside checkpoints.

Config layout (egs/mini/conf/student_tiny.yaml is an example)::

    encoder: tiny              # a preset name, or {preset: tiny, <ZipformerConfig overrides>}
    heads:                     # only the heads of the tasks being trained are built
      asr: {decoder_dim: 256, joiner_dim: 256, context_size: 2, use_ctc: false}
      at: {input_stack: null}
      sv: {emb_dim: 192, loss: aam, aam_margin: 0.2, aam_scale: 30.0, input_stack: null}
    loss: {warm_step: 2000, at_scale: 1.0, sv_scale: 1.0}

Data-dependent sizes are filled in by :func:`complete_model_config` (``heads.asr.vocab_size`` from
tokens.txt, ``heads.at.num_classes`` from class_labels_indices.csv, ``heads.sv.speakers`` from the SV
training cuts), so a checkpoint's ``model_config`` alone rebuilds the model.
"""

import copy
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
import yaml

from mt2kd_lib.data.contract import read_class_labels
from mt2kd_lib.models.at_head import ATHead
from mt2kd_lib.models.encoder_presets import build_encoder
from mt2kd_lib.models.student import LossConfig, StudentModel
from mt2kd_lib.models.sv_head import SVHead
from mt2kd_lib.models.transducer.transducer import TransducerHead

HEAD_KEYS = {
    "asr": {"vocab_size", "decoder_dim", "joiner_dim", "context_size", "blank_id", "use_ctc"},
    "at": {"num_classes", "input_stack"},
    "sv": {"speakers", "num_speakers", "emb_dim", "loss", "aam_margin", "aam_scale", "attention_channels",
           "input_stack"},
}


def load_model_config(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a model yaml; checks the top-level keys."""
    cfg = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(cfg) - {"encoder", "heads", "loss"})
    if unknown:
        raise ValueError(f"{path}: unknown model config keys {unknown} (expected encoder, heads, loss)")
    if "encoder" not in cfg:
        raise ValueError(f"{path}: model config needs an 'encoder' (preset name or dict)")
    return cfg


def read_vocab_size(tokens_txt: Union[str, Path]) -> int:
    """Vocabulary size = max token id + 1 in icefall's tokens.txt (``<sym> <id>`` lines)."""
    ids = []
    for n, line in enumerate(Path(tokens_txt).read_text().splitlines()):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{tokens_txt}: line {n + 1} is not '<symbol> <id>': {line!r}")
        ids.append(int(parts[1]))
    if not ids:
        raise ValueError(f"{tokens_txt}: empty token list")
    return max(ids) + 1


def select_tasks(cfg: Dict[str, Any], tasks: Sequence[str]) -> Dict[str, Any]:
    """Copy of ``cfg`` keeping only the heads of ``tasks`` (each must be configured)."""
    cfg = copy.deepcopy(cfg)
    heads = cfg.get("heads") or {}
    missing = [t for t in tasks if t not in heads]
    if missing:
        raise ValueError(f"model config has no head for task(s) {missing}; it configures {sorted(heads)}")
    cfg["heads"] = {t: dict(heads[t] or {}) for t in tasks}
    return cfg


def complete_model_config(
    cfg: Dict[str, Any],
    lang_dir: Optional[Path] = None,
    manifest_dir: Optional[Path] = None,
    speakers: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """Fill the data-dependent sizes of the configured heads (sizes already given are checked)."""
    cfg = copy.deepcopy(cfg)
    heads = cfg.get("heads") or {}
    if "asr" in heads:
        if lang_dir is None:
            raise ValueError("an ASR head needs lang_dir (tokens.txt) to know the vocabulary size")
        vocab = read_vocab_size(Path(lang_dir) / "tokens.txt")
        _set_or_check(heads["asr"], "vocab_size", vocab, "asr")
    if "at" in heads:
        if manifest_dir is None:
            raise ValueError("an AT head needs manifest_dir (class_labels_indices.csv)")
        _set_or_check(heads["at"], "num_classes", len(read_class_labels(manifest_dir)), "at")
    if "sv" in heads:
        if speakers is not None:
            spk = sorted(set(speakers))
            heads["sv"]["speakers"] = spk
            heads["sv"]["num_speakers"] = len(spk)
        elif "num_speakers" not in heads["sv"]:
            raise ValueError("an SV head needs the training speakers (or num_speakers)")
    cfg["heads"] = heads
    return cfg


def _set_or_check(head: Dict[str, Any], key: str, value: int, name: str) -> None:
    if key in head and head[key] is not None and int(head[key]) != value:
        raise ValueError(f"heads.{name}.{key}={head[key]} in the config but the data gives {value}")
    head[key] = value


def build_student(cfg: Dict[str, Any]) -> StudentModel:
    """Construct the model a (completed) config describes."""
    encoder = build_encoder(cfg["encoder"])
    heads = cfg.get("heads") or {}
    unknown_heads = sorted(set(heads) - set(HEAD_KEYS))
    if unknown_heads:
        raise ValueError(f"unknown heads {unknown_heads}; known: {sorted(HEAD_KEYS)}")
    for name, h in heads.items():
        bad = sorted(set(h or {}) - HEAD_KEYS[name])
        if bad:
            raise ValueError(f"heads.{name}: unknown keys {bad}; known: {sorted(HEAD_KEYS[name])}")
    asr = at = sv = None
    at_stack = sv_stack = None
    if "asr" in heads:
        h = heads["asr"]
        if "vocab_size" not in h:
            raise ValueError("heads.asr.vocab_size missing; call complete_model_config first")
        asr = TransducerHead(
            encoder_dim=encoder.output_dim,
            vocab_size=int(h["vocab_size"]),
            decoder_dim=int(h.get("decoder_dim", 512)),
            joiner_dim=int(h.get("joiner_dim", 512)),
            context_size=int(h.get("context_size", 2)),
            blank_id=int(h.get("blank_id", 0)),
            use_ctc=bool(h.get("use_ctc", False)),
        )
    if "at" in heads:
        h = heads["at"]
        if "num_classes" not in h:
            raise ValueError("heads.at.num_classes missing; call complete_model_config first")
        at_stack = h.get("input_stack")
        in_dim = encoder.output_dim if at_stack is None else encoder.stack_dims[int(at_stack)]
        at = ATHead(in_dim, int(h["num_classes"]))
    if "sv" in heads:
        h = heads["sv"]
        sv_stack = h.get("input_stack")
        in_dim = encoder.output_dim if sv_stack is None else encoder.stack_dims[int(sv_stack)]
        sv = SVHead(
            in_dim,
            emb_dim=int(h.get("emb_dim", 192)),
            num_speakers=h.get("num_speakers"),
            loss=h.get("loss", "softmax"),
            aam_margin=float(h.get("aam_margin", 0.2)),
            aam_scale=float(h.get("aam_scale", 30.0)),
            attention_channels=int(h.get("attention_channels", 128)),
        )
    return StudentModel(
        encoder, asr, at, sv,
        at_input_stack=None if at_stack is None else int(at_stack),
        sv_input_stack=None if sv_stack is None else int(sv_stack),
        loss_cfg=LossConfig.from_dict(cfg.get("loss")),
    )


def speaker_map_from_config(cfg: Dict[str, Any]) -> Optional[Dict[str, int]]:
    """speaker -> index map stored by :func:`complete_model_config` (None when absent)."""
    spk: Optional[List[str]] = (cfg.get("heads") or {}).get("sv", {}).get("speakers")
    return None if spk is None else {s: i for i, s in enumerate(spk)}


def model_from_checkpoint(path: Union[str, Path], map_location: str = "cpu") -> StudentModel:
    """Rebuild a model from a checkpoint's ``model_config`` and load its weights."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if "model_config" not in ckpt:
        raise ValueError(f"{path}: checkpoint has no model_config; it was not written by mt2kd's trainer")
    model = build_student(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model
