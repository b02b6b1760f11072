"""Multi-codebook vector quantisation (MVQ) of a frame-level teacher's outputs, as in icefall's distillation recipes.

Instead of the float frames, the dump stores for every frame ``num_codebooks`` uint8 indexes (one per codebook of
256 centres; the frame is approximated by the sum of the chosen centres). The quantizer is the ``multi_quantization``
package's (k2-fsa): it is trained once per dump on a sample of the teacher's frames, saved as ``quantizer.pt`` next
to ``dump_config.json``, and used by every shard. The student then learns the indexes with a cross-entropy per
codebook (:mod:`mt2kd_lib.models.kd_mvq_head`); it never needs the centres, only the number of codebooks.

The indexes are uint8 arrays, so the Shar dump stores them as ``.npy`` members of the teacher's field tars (the
writer's integer path, exact), not lilcom, which is for floats; stock ``cut.load_<field>()`` reads them back.
"""

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

Pathlike = Union[str, Path]

QUANTIZER_NAME = "quantizer.pt"
CODEBOOK_SIZE = 256  # one byte per codebook: the package's second training phase always ends at 256 centres
TARGETS = ("l1", "mvq")


@dataclass
class MvqConfig:
    """How to train and apply the quantizer (stored in dump_config.json under ``mvq``)."""

    num_codebooks: int = 8  # bytes per frame; a power of two (the package's constraint)
    # icefall trains 20k+20k steps of ~600 frames on a GPU; on egs/mini's 96-dim teacher 400 steps of 128 frames
    # reach 11% relative error (RESULTS_NOTES.md) in ~100 CPU-seconds.
    train_iters: int = 400  # half with 16-centre codebooks, half after merging pairs into 256-centre ones
    batch_frames: int = 128
    sample_cuts: int = 100  # cuts run through the teacher to get the training frames
    max_frames: int = 50000
    refine_iters: int = 2  # index refinement when encoding (icefall uses 5; each costs ~ one encode)
    seed: int = 0

    def __post_init__(self) -> None:
        n = self.num_codebooks
        if n not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MVQ num_codebooks must be one of 1, 2, 4, 8, 16, 32 (a power of two), got {n}")
        if self.train_iters < 2:
            raise ValueError(f"MVQ train_iters must be >= 2, got {self.train_iters}")
        for key in ("batch_frames", "sample_cuts", "max_frames"):
            if getattr(self, key) <= 0:
                raise ValueError(f"MVQ {key} must be positive, got {getattr(self, key)}")
        if self.refine_iters < 0:
            raise ValueError(f"MVQ refine_iters must be >= 0, got {self.refine_iters}")


def _mq():
    try:
        import multi_quantization
    except ImportError as e:  # it imports h5py at module level
        raise ImportError(f"MVQ needs the multi-quantization and h5py packages (pip install multi-quantization "
                          f"h5py): {e}") from e
    return multi_quantization


class FrameQuantizer:
    """A ``multi_quantization.Quantizer`` applied to normalised frames: ``(x - mean) / scale``.

    The package's trainer starts its centres near zero with unit scale; with a few hundred steps (not icefall's
    20k) it cannot reach data whose mean is far from zero (a +5 offset on toy data: 39% relative error instead of
    6%), so the frames are centred per dimension and scaled by their overall standard deviation first.
    """

    def __init__(self, quantizer: Any, mean: np.ndarray, scale: float) -> None:
        self.quantizer = quantizer
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = float(scale)

    dim = property(lambda self: self.quantizer.dim)
    num_codebooks = property(lambda self: self.quantizer.num_codebooks)
    codebook_size = property(lambda self: self.quantizer.codebook_size)

    def get_id(self) -> str:
        return self.quantizer.get_id()

    def normalise(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((np.asarray(frames, dtype=np.float32) - self.mean) / self.scale).astype(np.float32))


def train_quantizer(frames: np.ndarray, cfg: MvqConfig) -> FrameQuantizer:
    """Train a ``multi_quantization.Quantizer`` on ``frames`` (N, dim) with random mini-batches (seeded)."""
    mq = _mq()
    if frames.ndim != 2 or frames.shape[0] < 2:
        raise ValueError(f"MVQ training needs frames of shape (N >= 2, dim), got {frames.shape}")
    frames = np.asarray(frames, dtype=np.float64)
    mean = frames.mean(axis=0)
    scale = float(np.sqrt(((frames - mean) ** 2).mean())) or 1.0
    fq = FrameQuantizer(None, mean, scale)
    x = fq.normalise(frames)
    # The trainer draws its own random numbers (refinement iterations) from python's and torch's generators.
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    half = cfg.train_iters // 2
    trainer = mq.QuantizerTrainer(dim=x.shape[1], bytes_per_frame=cfg.num_codebooks, device=torch.device("cpu"),
                                  phase_one_iters=half, phase_two_iters=cfg.train_iters - half)
    t0 = time.time()
    while not trainer.done():
        trainer.step(x[torch.randint(0, x.shape[0], (cfg.batch_frames,), generator=gen)])
    fq.quantizer = trainer.get_quantizer().eval()
    logging.info("MVQ quantizer %s: dim %d, %d codebooks x %d, trained on %d frames in %.1f s",
                 fq.get_id(), fq.dim, fq.num_codebooks, fq.codebook_size, x.shape[0], time.time() - t0)
    return fq


def save_quantizer(fq: FrameQuantizer, path: Pathlike) -> None:
    """Write the quantizer with its shape and normalisation (loading needs no other file), via a temporary name."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(dict(quantizer_info(fq), mean=torch.from_numpy(fq.mean), scale=fq.scale,
                    state_dict=fq.quantizer.state_dict()), tmp)
    tmp.replace(path)


def load_quantizer(path: Pathlike, expected: Optional[Dict[str, Any]] = None) -> FrameQuantizer:
    """Load a quantizer saved by :func:`save_quantizer`; ``expected`` keys (dim, num_codebooks, quantizer_id) must match.

    Raises:
        FileNotFoundError / RuntimeError naming ``path`` when it is missing, unreadable or does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MVQ quantizer file {path} is missing (it is written by the dump stage, next to "
                                "dump_config.json; re-run the dump into a fresh --out-dir)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        quantizer = _mq().Quantizer(dim=int(obj["dim"]), codebook_size=int(obj["codebook_size"]),
                                    num_codebooks=int(obj["num_codebooks"]))
        quantizer.load_state_dict(obj["state_dict"])
        fq = FrameQuantizer(quantizer.eval(), obj["mean"].numpy(), float(obj["scale"]))
        if fq.mean.shape != (fq.dim,):
            raise ValueError(f"mean has shape {fq.mean.shape}, expected ({fq.dim},)")
    except ImportError:
        raise
    except Exception as e:
        raise RuntimeError(f"MVQ quantizer file {path} is corrupt or not a quantizer ({type(e).__name__}: {e})") from e
    for key, want in (expected or {}).items():
        have = fq.get_id() if key == "quantizer_id" else getattr(fq, key)
        if have != want:
            raise RuntimeError(f"MVQ quantizer file {path} has {key}={have!r}, the dump config says {want!r}")
    return fq


def quantizer_info(quantizer: FrameQuantizer) -> Dict[str, Any]:
    return dict(dim=quantizer.dim, num_codebooks=quantizer.num_codebooks, codebook_size=quantizer.codebook_size,
                quantizer_id=quantizer.get_id())


@torch.no_grad()
def encode_frames(fq: FrameQuantizer, frames: np.ndarray, refine_iters: int = 2) -> np.ndarray:
    """(T, dim) float -> (T, num_codebooks) uint8 indexes."""
    if fq.codebook_size != CODEBOOK_SIZE:
        raise ValueError(f"MVQ storage needs {CODEBOOK_SIZE}-centre codebooks, the quantizer has {fq.codebook_size}")
    idx = fq.quantizer.encode(fq.normalise(frames), refine_indexes_iters=refine_iters, as_bytes=True)
    return idx.numpy().astype(np.uint8, copy=False)


@torch.no_grad()
def decode_indexes(fq: FrameQuantizer, indexes: np.ndarray) -> np.ndarray:
    """(T, num_codebooks) indexes -> (T, dim) float32 approximation (sum of the chosen centres, de-normalised)."""
    idx = torch.from_numpy(np.ascontiguousarray(indexes).astype(np.int64))
    return (fq.quantizer.decode(idx).numpy() * fq.scale + fq.mean).astype(np.float32, copy=False)


def sample_cuts(cuts: Sequence[Any], n: int, seed: int) -> List[Any]:
    """A seeded random subset of ``n`` cuts (all when there are fewer)."""
    if len(cuts) <= n:
        return list(cuts)
    rng = random.Random(seed)
    return [cuts[i] for i in sorted(rng.sample(range(len(cuts)), n))]


def subsample_frames(frames: List[np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    x = np.concatenate(frames, axis=0)
    if x.shape[0] > max_frames:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_frames, replace=False)]
    return x


def relative_error(quantizer: FrameQuantizer, frames: np.ndarray, refine_iters: int = 2) -> float:
    """Mean squared reconstruction error over the per-dimension variance of ``frames`` (1.0 = predicting the mean)."""
    rec = decode_indexes(quantizer, encode_frames(quantizer, frames, refine_iters))
    var = float(frames.astype(np.float64).var(axis=0).sum())
    return float(((rec - frames) ** 2).sum(axis=1).mean()) / max(var, 1e-30)


def check_codebook_field(cuts: Sequence[Any], field: str, num_codebooks: int) -> None:
    """Every cut's index array ``field`` must have ``num_codebooks`` columns (from the manifests; nothing decoded).

    Raises:
        ValueError naming the archive (shard file) and the cut otherwise.
    """
    for c in cuts:
        m = (c.custom or {}).get(field)
        if m is None:
            continue
        shape = list(getattr(m, "shape", None) or [])
        if len(shape) != 2 or shape[1] != num_codebooks:
            storage = getattr(getattr(m, "array", m), "storage_path", "?")
            raise ValueError(f"MVQ teacher field {field!r}: cut {c.id} in archive {storage} has index shape {shape}, "
                             f"the KD head expects (frames, {num_codebooks}) (num_codebooks of the dump config)")


def frame_target_from_config(name: str, teachers_config: Optional[Pathlike]) -> Dict[str, Any]:
    """The per-teacher ``target`` (l1 | mvq) and ``num_codebooks`` of a teachers yaml entry (empty when unset)."""
    if teachers_config is None:
        return {}
    from mt2kd_lib.teachers.registry import read_teachers_config

    entry = read_teachers_config(teachers_config).get(name) or {}
    out = {k: entry[k] for k in ("target", "num_codebooks") if k in entry}
    if "target" in out and out["target"] not in TARGETS:
        raise ValueError(f"{teachers_config}: teacher {name!r} has target {out['target']!r}, expected one of {TARGETS}")
    return out



def mvq_teacher_fields(out_dir: Pathlike, teacher: str, dump_config: Dict[str, Any]) -> Dict[str, Any]:
    """KD config of an MVQ dump (``kind: mvq``, num_codebooks, codebook_size); ``{}`` for a float dump.

    The quantizer file is loaded and compared with the dump config, so a missing or corrupt one is named here.
    """
    if dump_config.get("target") != "mvq":
        return {}
    m = dump_config.get("mvq") or {}
    from mt2kd_lib.data.teacher_shar import teacher_dir

    info = {k: m.get(k) for k in ("dim", "num_codebooks", "codebook_size", "quantizer_id")}
    load_quantizer(teacher_dir(out_dir, teacher) / m.get("quantizer", QUANTIZER_NAME), info)
    return dict(kind="mvq", num_codebooks=int(m["num_codebooks"]), codebook_size=int(m["codebook_size"]))
