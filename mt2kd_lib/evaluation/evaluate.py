"""Evaluate a trained system on every task it supports: WER per ASR test set (icefall result files), mAP on
the AT eval set(s), EER and minDCF per trial list (plus a DET plot). Used for students and teachers alike:
SV scoring takes any ``cut id -> embedding`` function, so an external teacher (resemblyzer, ECAPA) is scored
exactly like our models."""

import logging
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet
from tqdm import tqdm

from mt2kd_lib.data import contract
from mt2kd_lib.data.datamodule import make_eval_dl
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.decoding.asr_results import write_asr_results
from mt2kd_lib.decoding.methods import DecodingOptions, decoders_for, result_key
from mt2kd_lib.metrics.tagging import mean_average_precision, write_at_results
from mt2kd_lib.metrics.verification import (compute_eer, compute_min_dcf, cosine_scores, plot_det, read_trials,
                                            write_sv_results)
from mt2kd_lib.models.student import StudentModel
from mt2kd_lib.training.checkpoint import average_state_dicts, epoch_checkpoints_for_avg, find_checkpoints
from mt2kd_lib.training.model_avg import average_between

FRAMES_PER_SECOND = 100  # fbank frame shift 10 ms
EmbedFn = Callable[[CutSet], Dict[str, np.ndarray]]


def _as_list(v) -> List[str]:
    return [] if v is None else ([v] if isinstance(v, str) else list(v))


def averaged_state(exp_dir: Path, epoch: Optional[int] = None, avg: int = 1,
                   use_averaged_model: bool = False) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The weights :func:`load_averaged_model` builds its model from, and the checkpoint's ``model_config``."""
    if epoch is None:
        found = find_checkpoints(exp_dir, "epoch")
        if not found:
            raise FileNotFoundError(f"{exp_dir}: no epoch-*.pt checkpoints; did training finish?")
        epoch = int(found[0].stem.split("-")[1])
    paths = epoch_checkpoints_for_avg(exp_dir, epoch, min(avg, epoch))
    ckpt = torch.load(paths[-1], map_location="cpu", weights_only=False)
    if use_averaged_model:
        start = Path(exp_dir) / f"epoch-{epoch - len(paths)}.pt" if epoch > len(paths) else None
        logging.info(f"{exp_dir}: the mean weights of epochs {epoch - len(paths) + 1}..{epoch} (model_avg)")
        return average_between(paths[-1], start, end_ckpt=ckpt), ckpt["model_config"]
    states = [torch.load(p, map_location="cpu", weights_only=False)["model"] for p in paths[:-1]] + [ckpt["model"]]
    logging.info(f"{exp_dir}: epoch {epoch} averaged over {len(paths)} checkpoint(s)")
    return (average_state_dicts(states) if len(states) > 1 else states[0]), ckpt["model_config"]


def load_averaged_model(exp_dir: Path, epoch: Optional[int] = None, avg: int = 1,
                        use_averaged_model: bool = False) -> StudentModel:
    """epoch-N.pt (the last one when ``epoch`` is None) averaged with the avg-1 before it (icefall --epoch/--avg);
    with ``use_averaged_model``, the mean of the weights over the last ``avg`` epochs' batches instead, from the
    checkpoints' ``model_avg`` (icefall --use-averaged-model; ``avg`` = ``epoch``: since batch 0)."""
    from mt2kd_lib.models.factory import build_student

    state, config = averaged_state(exp_dir, epoch, avg, use_averaged_model)
    model = build_student(config)
    model.load_state_dict(state)
    return model.eval()


def _load(recipe_data: Path, task: str, split: str) -> CutSet:
    return CutSet.from_file(fbank_cuts_path(Path(recipe_data) / "fbank", task, split))


@torch.no_grad()
def evaluate_asr(model: StudentModel, recipe_data: Path, res_dir: Path, lang_dir: Path,
                 method: str = "greedy_search", beam: int = 4, max_duration: float = 300.0,
                 methods: Optional[Sequence[str]] = None, opts: Optional[DecodingOptions] = None,
                 dev: bool = True, test: bool = True) -> Dict[str, dict]:
    """WER per ASR test set (and, with ``dev``, per dev set) for each decoding method in ``methods`` (default:
    just ``method``).

    The encoder runs once per batch and every method decodes its output. The first method's result files go to
    ``res_dir``, each other method's to ``res_dir/../<method>``. Returns ``{method: {"wer": {test: WER},
    "wer_dev": {dev: WER}, "rtf": real-time factor (encoder + that method)}}``, or ``{method: {"skipped":
    reason}}`` for a method that cannot run here (e.g. "needs k2"), so that the results say so instead of
    dropping it. Dev WERs are kept apart from the test ones: they are what settings are chosen on (``test=False``:
    the dev sets alone).
    """
    methods = list(methods or [method])
    opts = opts or DecodingOptions(beam_size=beam)
    index = contract.read_index(Path(recipe_data) / "manifests")
    splits = [("wer", s) for s in _as_list(index["asr"].get("test"))] if test else []
    if dev:
        splits += [("wer_dev", s) for s in _as_list(index["asr"].get("dev"))]
    decoders = decoders_for(methods, model.asr_head, lang_dir, opts)
    out: Dict[str, dict] = {}
    for m, dec in decoders.items():
        if isinstance(dec, str):
            logging.warning(f"decoding method {m}: not run ({dec})")
            out[m] = {"skipped": dec}
        else:
            out[m] = {"wer": {}, **{kind: {} for kind, _ in splits}}
    runnable = {m: d for m, d in decoders.items() if not isinstance(d, str)}
    seconds = {m: 0.0 for m in runnable}
    enc_seconds = audio_seconds = 0.0
    for kind, test in splits:
        results: Dict[str, list] = {m: [] for m in runnable}
        for batch in tqdm(make_eval_dl(_load(recipe_data, "asr", test), max_duration), desc=f"decode {test}",
                          mininterval=5, leave=False):
            t0 = time.perf_counter()
            enc, enc_lens = model.asr_encoder_out(batch["features"], batch["feature_lens"])
            enc_seconds += time.perf_counter() - t0
            audio_seconds += float(batch["feature_lens"].sum()) / FRAMES_PER_SECOND
            for m, decode in runnable.items():
                t0 = time.perf_counter()
                hyps = decode(enc, enc_lens)
                seconds[m] += time.perf_counter() - t0
                for cid, ref, hyp in zip(batch["cut_ids"], batch["texts"], hyps):
                    results[m].append((cid, ref.split(), hyp))
        for m in runnable:
            key = result_key(m, opts)
            m_dir = Path(res_dir) if m == methods[0] else Path(res_dir).parent / m
            out[m][kind][test] = write_asr_results(m_dir, test, key, results[m])
            logging.info(f"WER {test} ({key}): {out[m][kind][test]:.2f}%")
    for m in runnable:
        out[m]["rtf"] = round((enc_seconds + seconds[m]) / max(audio_seconds, 1e-9), 4)
    return out


@torch.no_grad()
def evaluate_at(score_fn: Callable[[CutSet], Dict[str, np.ndarray]], recipe_data: Path, res_dir: Path,
                name: str = "") -> Dict[str, float]:
    """mAP per AT eval split; ``score_fn`` maps cuts to ``cut id -> class scores``."""
    manifest_dir = Path(recipe_data) / "manifests"
    index = contract.read_index(manifest_dir)
    classes = [r[2] for r in contract.read_class_labels(manifest_dir)]
    out = {}
    for split in _as_list(index["at"].get("eval")):
        cuts = _load(recipe_data, "at", split)
        scores = score_fn(cuts)
        targets = np.zeros((len(cuts), len(classes)), dtype=np.float32)
        for i, c in enumerate(cuts):
            targets[i, contract.parse_audio_event(c.supervisions[0].custom["audio_event"], len(classes), c.id)] = 1
        mat = np.stack([scores[c.id] for c in cuts])
        m, per_class = mean_average_precision(mat, targets)
        write_at_results(res_dir, f"{name}{split}", m, per_class, classes)
        out[split] = m
        logging.info(f"mAP {split}: {m:.4f}")
    return out


@torch.no_grad()
def evaluate_sv(embed_fn: EmbedFn, recipe_data: Path, res_dir: Path, name: str = "",
                dev: bool = True, test: bool = True) -> Dict[str, Dict[str, float]]:
    """EER (%) and minDCF (p_target 0.01) per trial list; ``embed_fn`` maps cuts to ``cut id -> embedding``.

    Returns ``{"eer": {trials: %}, "min_dcf": {trials: x}}`` for the test lists, plus ``eer_dev`` and
    ``min_dcf_dev`` for the dev lists (``sv.dev_trials``) when ``dev`` and the corpus has them (``test=False``:
    the dev lists alone)."""
    manifest_dir = Path(recipe_data) / "manifests"
    sv = contract.read_index(manifest_dir)["sv"]
    groups = [("", sv["test"], _as_list(sv.get("trials")))] if test else []
    if dev and sv.get("dev") and sv.get("dev_trials"):
        groups.append(("_dev", sv["dev"], _as_list(sv["dev_trials"])))
    out: Dict[str, Dict[str, float]] = {}
    for suffix, split, lists in groups:
        emb = embed_fn(_load(recipe_data, "sv", split))
        eer, dcf, curves = {}, {}, {}
        for trials_name in lists:
            trials = read_trials(contract.trials_path(manifest_dir, trials_name))
            scores = cosine_scores(emb, trials)
            labels = np.array([t[0] for t in trials])
            e, _ = compute_eer(scores, labels)
            d, _ = compute_min_dcf(scores, labels, p_target=0.01)
            eer[trials_name], dcf[trials_name] = 100 * e, d
            write_sv_results(res_dir, f"{name}{trials_name}", e, d, len(trials))
            curves[trials_name] = (scores, labels)
            logging.info(f"SV {trials_name}{' (dev)' if suffix else ''}: EER {100 * e:.2f}%, minDCF {d:.4f}")
        if curves and not suffix:
            plot_det(curves, Path(res_dir) / f"det-{name or 'sv'}.png")
        out["eer" + suffix], out["min_dcf" + suffix] = eer, dcf
    return out


def model_at_scores(model: StudentModel, max_duration: float = 300.0):
    def score(cuts: CutSet) -> Dict[str, np.ndarray]:
        out = {}
        for batch in make_eval_dl(cuts, max_duration, task="at"):
            probs = torch.sigmoid(model.at_logits(batch["features"], batch["feature_lens"]))
            out.update({cid: p.numpy() for cid, p in zip(batch["cut_ids"], probs)})
        return out
    return score


def model_sv_embeddings(model: StudentModel, max_duration: float = 300.0) -> EmbedFn:
    def embed(cuts: CutSet) -> Dict[str, np.ndarray]:
        out = {}
        for batch in make_eval_dl(cuts, max_duration, task="sv"):
            e = model.sv_embeddings(batch["features"], batch["feature_lens"])
            out.update({cid: v.numpy() for cid, v in zip(batch["cut_ids"], e)})
        return out
    return embed


def teacher_sv_embeddings(teacher, batch_size: int = 8) -> EmbedFn:
    """Embeddings of an utterance-level teacher (any :class:`~mt2kd_lib.teachers.base.Teacher`) from audio."""
    def embed(cuts: CutSet) -> Dict[str, np.ndarray]:
        cut_list = list(cuts)
        out = {}
        for i in tqdm(range(0, len(cut_list), batch_size), desc=f"{teacher.spec.name} embeddings", mininterval=5,
                      leave=False):
            chunk = cut_list[i:i + batch_size]
            audios = [c.resample(teacher.spec.sampling_rate).load_audio()[0] for c in chunk]
            for c, v in zip(chunk, teacher.infer_batch(audios)):
                out[c.id] = v
        return out
    return embed


def evaluate_student(model: StudentModel, recipe_data: Path, res_dir: Path, lang_dir: Optional[Path],
                     tasks: Sequence[str] = ("asr", "at", "sv"), asr_method: str = "greedy_search",
                     beam: int = 4, asr_methods: Optional[Sequence[str]] = None, dev: bool = True,
                     test: bool = True) -> dict:
    """Every supported task of ``model`` in ``tasks``; returns the results.json fragment.

    ASR: ``asr.wer`` (and ``asr.wer_dev`` with ``dev``) is the WER of the first of ``asr_methods`` (default
    ``[asr_method]``); with several methods, ``asr.methods`` has each one's WER and real-time factor, or why it
    was not run. SV: see :func:`evaluate_sv`. ``test=False``: the dev sets alone (AT has none, so it is skipped),
    for choosing settings."""
    res_dir = Path(res_dir)
    res_dir.mkdir(parents=True, exist_ok=True)
    index = contract.read_index(Path(recipe_data) / "manifests")
    results: dict = {"params": int(sum(p.numel() for p in model.parameters()))}
    if "asr" in tasks and model.asr_head is not None and "asr" in index:
        if lang_dir is None:
            raise FileNotFoundError(f"{recipe_data}: no lang_bpe_* folder to decode with; pass lang_dir")
        methods = list(asr_methods or [asr_method])
        by_method = evaluate_asr(model, recipe_data, res_dir, lang_dir, asr_method, beam, methods=methods, dev=dev,
                                 test=test)
        first = by_method[methods[0]]
        if "skipped" in first:
            raise RuntimeError(f"decoding method {methods[0]}: {first['skipped']}; put a method that can run first")
        results["asr"] = {k: v for k, v in first.items() if k in ("wer", "wer_dev")}
        if len(methods) > 1:
            results["asr"]["methods"] = by_method
    if test and "at" in tasks and model.at_head is not None and "at" in index:
        maps = evaluate_at(model_at_scores(model), recipe_data, res_dir)
        results["at"] = {"mAP": float(np.mean(list(maps.values()))), "mAP_per_split": maps}
    if "sv" in tasks and model.sv_head is not None and "sv" in index:
        results["sv"] = evaluate_sv(model_sv_embeddings(model), recipe_data, res_dir, dev=dev, test=test)
    return results
