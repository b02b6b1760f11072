"""Stage-2 fine-tuning options of local/train.py on the tiny egs/mini recipe (``tiny_recipe``, run.sh stages 1-3).

(a) ``--freeze-encoder-steps N``: after N steps the encoder is bit-identical while every head moved; after N+k
    the encoder moved too; ScaledAdam's frozen groups resist momentum, which a zero gradient does not;
(b) resuming inside the frozen phase keeps the remaining steps frozen (and equals the uninterrupted run);
(c) ``--at-soft-labels``: the AT targets are the AT teacher's probabilities read back from a real lilcom dump over
    the AT training split's Shar export (W = 1) or their mix with the hard labels (W = 0.5); validation stays on
    the hard labels;
(d) an AT training cut without teacher output, a dump over other cuts, or a teacher of the wrong dimension, is an
    error naming them;
(e) run.sh passes both options in stage 7 and in kd_then_finetune (stage-8 ablations);
and local/train.py's main() runs one epoch with both options.
"""

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
import yaml
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler
from lhotse.utils import fastcopy
from torch import nn

from conftest import REPO, load_script
from mt2kd_lib.data.bpe import load_bpe
from mt2kd_lib.data.contract import read_class_labels
from mt2kd_lib.data.datamodule import speaker_map_from_cuts, tag_task
from mt2kd_lib.data.dataset import MultiTaskDataset, add_tokens
from mt2kd_lib.data.features import fbank_cuts_path
from mt2kd_lib.data.soft_labels import export_ids_sha1
from mt2kd_lib.models.factory import build_student, complete_model_config, load_model_config, select_tasks
from mt2kd_lib.teachers.base import Teacher, TeacherSpec
from mt2kd_lib.teachers.dump import dump_teacher
from mt2kd_lib.data.shar import export_pool_shar
from mt2kd_lib.data.teacher_shar import load_dump_config, read_pool_info, read_teacher_cuts
from mt2kd_lib.training.launch import params_from_args
from mt2kd_lib.training.optim import ScaledAdam, get_parameter_groups_with_lrs
from mt2kd_lib.training.trainer import Trainer, TrainParams, fix_random_seed

# A one-stack Zipformer2 so that a training step takes a fraction of a second on one core.
SMALL_ENCODER = {
    "preset": "tiny", "num_encoder_layers": [1], "downsampling_factor": [1], "encoder_dim": [32],
    "feedforward_dim": [64], "num_heads": [2], "cnn_module_kernel": [15], "encoder_unmasked_dim": [32],
    "dropout": 0.0,
}
FREEZE = 2  # frozen steps in the training tests
BATCHES = 4  # steps in their one epoch
HEADS = ("asr_head.decoder.", "asr_head.joiner.", "at_head.", "sv_head.")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def train_cli():
    """local/train.py as a module (its get_parser / check_args / prepare_data)."""
    return load_script("local/train.py")


def _cuts(recipe, task: str) -> CutSet:
    return CutSet.from_file(fbank_cuts_path(recipe["data"] / "fbank", task, "train"))


# ---------------------------------------------------------------------------------------------------- (a), (b)


def _mixed_dl(recipe, ds: MultiTaskDataset) -> torch.utils.data.DataLoader:
    """BATCHES batches of one ASR, one AT and two SV cuts each (every head trains in every step), in a fixed
    order, from a lhotse sampler (its state is in the checkpoints, so resuming mid-epoch is exact)."""
    asr, at, sv = (list(_cuts(recipe, t)) for t in ("asr", "at", "sv"))
    cuts = [c.with_custom("task", t) for i in range(BATCHES)
            for c, t in ((asr[i], "asr"), (at[i], "at"), (sv[2 * i], "sv"), (sv[2 * i + 1], "sv"))]
    sampler = SimpleCutSampler(CutSet.from_cuts(cuts), max_cuts=4, shuffle=False)
    return torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=None)


def _trainer(recipe, exp_dir: Path, freeze: int, encoder_lr_scale: float = 1.0, **kw) -> Trainer:
    """A 3-head student, BATCHES steps an epoch, a checkpoint after every step."""
    sv = _cuts(recipe, "sv").subset(first=2 * BATCHES)
    cfg = complete_model_config({
        "encoder": SMALL_ENCODER,
        "heads": {"asr": {"decoder_dim": 32, "joiner_dim": 32}, "at": {},
                  "sv": {"emb_dim": 16, "loss": "softmax", "attention_channels": 8}},
        "loss": {"warm_step": 2},
    }, recipe["lang"], recipe["data"] / "manifests", speaker_map_from_cuts(sv))
    fix_random_seed(1)
    model = build_student(cfg)
    if encoder_lr_scale != 1.0:
        model.encoder.lr_scale = encoder_lr_scale  # as local/train.py --encoder-lr-scale
    dl = _mixed_dl(recipe, MultiTaskDataset(speaker_map_from_cuts(sv), cfg["heads"]["at"]["num_classes"]))
    params = TrainParams(exp_dir=str(exp_dir), num_epochs=1, tensorboard=False, log_interval=0, save_every_n=1,
                         keep_last_k=0, lr_warmup_batches=1, freeze_encoder_steps=freeze, **kw)
    sp = load_bpe(recipe["lang"])
    return Trainer(model, params, dl, None, model_config=cfg, batch_transform=lambda b: add_tokens(b, sp.encode))


def _ckpt(path: Path) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _changed(state: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor], prefix: str) -> List[str]:
    return [k for k in ref if k.startswith(prefix) and not torch.equal(state[k], ref[k])]


def _encoder_has_state(optimizer_state: Dict) -> bool:
    """Whether ScaledAdam holds any state (momentum, scales) for the encoder's parameter groups."""
    enc = {i for g in optimizer_state["param_groups"] if g.get("module") == "encoder" for i in g["params"]}
    assert enc, "no optimizer group is marked as the encoder's"
    return bool(enc & set(optimizer_state["state"]))


@pytest.fixture(scope="module")
def frozen_run(tiny_recipe, tmp_path_factory):
    """One epoch with the encoder frozen for the first FREEZE batches; the initial model and the log."""
    exp = tmp_path_factory.mktemp("frozen")
    trainer = _trainer(tiny_recipe, exp, FREEZE)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    records: List[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("mt2kd_lib.training.trainer")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        trainer.fit()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return {"exp": exp, "init": init, "trainer": trainer, "log": [r.getMessage() for r in records]}


def test_encoder_frozen_for_n_steps_then_trains(frozen_run):
    init, exp = frozen_run["init"], frozen_run["exp"]
    assert frozen_run["trainer"].params.batch_idx_train == BATCHES
    frozen = _ckpt(exp / f"checkpoint-{FREEZE}.pt")
    # Bit-identical encoder (its Conv2dSubsampling front-end included), while every head moved.
    assert any(k.startswith("encoder.encoder_embed.") for k in init)
    assert _changed(frozen["model"], init, "encoder.") == []
    for head in HEADS:
        assert _changed(frozen["model"], init, head), f"{head} did not train in the frozen phase"
    assert not _encoder_has_state(frozen["optimizer"])  # no momentum built up behind the freeze
    # The next step trains the encoder, and the end of the epoch has it moved everywhere.
    after = _ckpt(exp / f"checkpoint-{FREEZE + 1}.pt")
    assert _changed(after["model"], init, "encoder.") and _encoder_has_state(after["optimizer"])
    final = _ckpt(exp / "epoch-1.pt")["model"]
    n_enc = sum(k.startswith("encoder.") for k in init)
    assert len(_changed(final, init, "encoder.")) > n_enc // 2
    assert f"Encoder frozen for batches 1..{FREEZE} (freeze_encoder_steps={FREEZE}): only the heads are updated" \
        in frozen_run["log"]
    assert any(m.startswith(f"Encoder unfrozen from batch {FREEZE + 1} on") for m in frozen_run["log"])


def test_without_freeze_the_first_step_moves_the_encoder(tiny_recipe, tmp_path):
    """Control for the test above: the same first batch without the option changes the encoder."""
    trainer = _trainer(tiny_recipe, tmp_path, freeze=0)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all("module" not in g for g in trainer.optimizer.param_groups)  # the groups are icefall's as before
    trainer.scheduler.step_epoch(0)
    trainer.params.batch_idx_train = 1
    trainer.train_step(next(iter(trainer.train_dl)))
    assert _changed(trainer.model.state_dict(), init, "encoder.")


def test_resume_inside_the_frozen_phase_stays_frozen(frozen_run, tiny_recipe, tmp_path, caplog):
    straight_exp = frozen_run["exp"]
    shutil.copyfile(straight_exp / "checkpoint-1.pt", tmp_path / "checkpoint-1.pt")
    resumed = _trainer(tiny_recipe, tmp_path, FREEZE, start_batch=1)
    with caplog.at_level(logging.INFO, logger="mt2kd_lib.training.trainer"):
        resumed.fit()
    assert _changed(_ckpt(tmp_path / f"checkpoint-{FREEZE}.pt")["model"], frozen_run["init"], "encoder.") == []
    assert f"Encoder frozen for batches 2..{FREEZE}" in caplog.text
    # Exactly the uninterrupted run: the flag follows the global batch index, not the process.
    a, b = _ckpt(straight_exp / "epoch-1.pt")["model"], resumed.model.state_dict()
    assert resumed.params.batch_idx_train == frozen_run["trainer"].params.batch_idx_train
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming inside the frozen phase"


def test_resume_with_the_option_off(frozen_run, tiny_recipe, tmp_path, caplog):
    """A frozen-phase checkpoint resumed without the option: the encoder trains at once (no stale ``frozen`` flag
    from the checkpoint's optimizer groups), or, where the group layouts differ, a clear error."""
    shutil.copyfile(frozen_run["exp"] / "checkpoint-1.pt", tmp_path / "checkpoint-1.pt")
    with pytest.raises(ValueError, match="resume with the --freeze-encoder-steps setting it was trained with"):
        _trainer(tiny_recipe, tmp_path, 0, start_batch=1).fit()
    # --encoder-lr-scale 0.5 gives the encoder groups of its own either way, so the layouts match.
    _trainer(tiny_recipe, tmp_path / "a", FREEZE, encoder_lr_scale=0.5).fit()
    (tmp_path / "b").mkdir()
    shutil.copyfile(tmp_path / "a" / "checkpoint-1.pt", tmp_path / "b" / "checkpoint-1.pt")
    caplog.clear()  # run "a" logs "Encoder frozen" too when an earlier test left the root logger at INFO
    with caplog.at_level(logging.INFO, logger="mt2kd_lib.training.trainer"):
        _trainer(tiny_recipe, tmp_path / "b", 0, encoder_lr_scale=0.5, start_batch=1).fit()
    assert f"was trained with freeze_encoder_steps={FREEZE}; continuing with 0" in caplog.text
    assert "Encoder frozen" not in caplog.text
    assert _changed(_ckpt(tmp_path / "b" / "checkpoint-2.pt")["model"], frozen_run["init"], "encoder.")
    assert _changed(_ckpt(tmp_path / "a" / "checkpoint-2.pt")["model"], frozen_run["init"], "encoder.") == []


def test_scaled_adam_frozen_group_resists_momentum():
    """Why the optimizer skips frozen groups: a zero gradient still moves parameters through the momentum."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(encoder=nn.Linear(6, 6), head=nn.Linear(6, 3)))
    groups = get_parameter_groups_with_lrs(model, lr=0.05, include_names=True, separate_modules=("encoder",))
    assert [g.get("module") for g in groups] == ["encoder", None]
    opt = ScaledAdam(groups, lr=0.05)
    enc_group = opt.param_groups[0]
    x = torch.randn(16, 6)

    def step(detach_encoder: bool = False) -> None:
        h = model.encoder(x)
        model.head(h.detach() if detach_encoder else h).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()

    for _ in range(3):
        step()  # momentum builds up
    enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    step(detach_encoder=True)  # no gradient reaches the encoder ...
    assert not torch.equal(model.encoder.weight, enc["weight"])  # ... and it moves anyway
    enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = model.head.weight.clone()
    state = {k: v.clone() for k, v in opt.state[model.encoder.weight].items() if torch.is_tensor(v)}
    enc_group["frozen"] = True
    for _ in range(5):
        step()
    assert all(torch.equal(v, enc[k]) for k, v in model.encoder.state_dict().items())
    assert all(torch.equal(v, opt.state[model.encoder.weight][k]) for k, v in state.items())
    assert not torch.equal(model.head.weight, head)
    enc_group["frozen"] = False
    step()
    assert not torch.equal(model.encoder.weight, enc["weight"])


def test_freeze_option_reaches_the_trainer(train_cli, tmp_path):
    base = ["--task", "multi", "--recipe-data", str(tmp_path), "--exp-dir", str(tmp_path), "--model-config", "x"]
    args = train_cli.get_parser().parse_args([*base, "--freeze-encoder-steps", "7"])
    train_cli.check_args(args)
    assert params_from_args(args).freeze_encoder_steps == 7
    assert params_from_args(train_cli.get_parser().parse_args(base)).freeze_encoder_steps == 0
    with pytest.raises(ValueError, match="-3 must be >= 0"):
        train_cli.check_args(train_cli.get_parser().parse_args([*base, "--freeze-encoder-steps", "-3"]))


# ---------------------------------------------------------------------------------------------------- (c), (d)


def toy_probs(audio: np.ndarray, dim: int) -> np.ndarray:
    """Class k's probability from the loudness of the k-th slice of the clip: distinct for every cut and class."""
    rms = np.array([np.sqrt(np.mean(p.astype(np.float64) ** 2)) + 1e-6 for p in np.array_split(audio, dim)])
    z = np.log(rms) - np.log(rms).mean()
    return (1.0 / (1.0 + np.exp(-3.0 * z))).astype(np.float32)


class ToyTagger(Teacher):
    """A deterministic clip-level AT teacher (what local/dump_teacher.py runs, minus the network)."""

    def __init__(self, dim: int, device: str = "cpu", min_duration: float = 0.0) -> None:
        self.spec = TeacherSpec(name="toy_tagger", task="at", output_kind="probabilities", level="utterance",
                                dim=dim, min_duration=min_duration)

    def infer_batch(self, audios: List[np.ndarray]) -> List[np.ndarray]:
        return [toy_probs(a, self.spec.dim) for a in audios]


def _dump(cuts: CutSet, out_dir: Path, dim: int, min_duration: float = 0.0) -> Path:
    export_pool_shar(cuts, out_dir / "at_train_shar", shard_size=6)
    dump_teacher(out_dir / "at_train_shar", functools.partial(ToyTagger, dim=dim, min_duration=min_duration),
                 out_dir, teacher_name="at_teacher", progress=False, num_threads=1)
    return out_dir


@pytest.fixture(scope="module")
def dumps(tiny_recipe, tmp_path_factory):
    """Dumps of the AT teacher over the AT training split's Shar export, as run.sh stage 5 writes them with
    finetune_at_soft_labels=true; and dumps that training must refuse."""
    root = tmp_path_factory.mktemp("teacher_outputs")
    at = _cuts(tiny_recipe, "at")
    k = len(read_class_labels(tiny_recipe["data"] / "manifests"))
    first = sorted(at.ids)[0]  # never in the validation hold-out (every k-th id from the k-th on)
    # The teacher skips a clip shorter than its minimum: that cut has no output.
    short = CutSet.from_cuts(fastcopy(c, duration=0.2) if c.id == first else c for c in at)
    return {
        "k": k,
        "full": _dump(at, root / "full", k),
        "other_cuts": _dump(CutSet.from_cuts(c for c in at if c.id != first), root / "other_cuts", k),
        "skipped_one": _dump(short, root / "skipped_one", k, min_duration=0.5),
        "missing_id": first,
        "wrong_dim": _dump(at, root / "wrong_dim", k + 1),
    }


def _prepare(train_cli, tiny_recipe, tmp_path, teacher_dir: Path, *extra: str):
    args = train_cli.get_parser().parse_args([
        "--task", "at", "--recipe-data", str(tiny_recipe["data"]), "--exp-dir", str(tmp_path),
        "--model-config", str(REPO / "egs/mini/conf/student_tiny.yaml"), "--max-duration", "9",
        "--valid-fraction", "0.25", "--spec-augment", "false",
        "--at-soft-labels", str(teacher_dir), "--at-soft-teacher", "at_teacher", *extra])
    train_cli.check_args(args)
    model_cfg = select_tasks(load_model_config(args.model_config), ["at"])
    return train_cli.prepare_data(args, ["at"], None, 0, 1, model_cfg)


def _hard(cut, k: int) -> torch.Tensor:
    y = torch.zeros(k)
    y[[int(v) for v in cut.supervisions[0].custom["audio_event"].split(";")]] = 1.0
    return y


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_soft_at_targets_from_a_real_dump(train_cli, tiny_recipe, dumps, tmp_path, weight):
    train_dl, valid_dl, cfg = _prepare(train_cli, tiny_recipe, tmp_path, dumps["full"], "--at-soft-weight", str(weight))
    k = dumps["k"]
    assert cfg["heads"]["at"]["num_classes"] == k
    # What lhotse reads back from the archive, and what the teacher computed before lilcom.
    field = load_dump_config(dumps["full"], "at_teacher")["field"]
    dumped = {c.id: c for c in read_teacher_cuts(dumps["full"], "at_teacher", dumps["full"] / "at_train_shar")
              if c.custom.get(field) is not None}
    tol = 2.0 ** (load_dump_config(dumps["full"], "at_teacher")["tick_power"] - 1) + 1e-6
    at_cuts = {c.id: c for c in _cuts(tiny_recipe, "at")}
    seen = set()
    for batch in train_dl:
        for i, cid in enumerate(batch["cut_ids"]):
            assert batch["at_mask"][i]
            decoded = torch.from_numpy(dumped[cid].custom[field].load()).clamp(0.0, 1.0)
            teacher = torch.from_numpy(toy_probs(at_cuts[cid].load_audio()[0], k))
            hard = _hard(at_cuts[cid], k)
            got = batch["at_targets"][i]
            if weight == 1.0:
                assert torch.equal(got, decoded), cid
                assert torch.allclose(got, teacher, atol=tol), cid
            else:
                assert torch.allclose(got, 0.5 * decoded + 0.5 * hard, atol=1e-7), cid
                assert torch.allclose(got, 0.5 * teacher + 0.5 * hard, atol=tol), cid
            assert not torch.equal(got, hard)
            seen.add(cid)
    assert len(seen) == 12  # 16 AT training cuts minus the 4 held out
    for batch in valid_dl:  # validation keeps the hard labels
        for i, cid in enumerate(batch["cut_ids"]):
            assert torch.equal(batch["at_targets"][i], _hard(at_cuts[cid], k)), cid


def test_training_cut_without_teacher_output_is_an_error(train_cli, tiny_recipe, dumps, tmp_path):
    missing = dumps["missing_id"]
    with pytest.raises(ValueError, match=rf"^1 of 16 AT training cuts have no teacher output in .*: {missing} "):
        _prepare(train_cli, tiny_recipe, tmp_path, dumps["skipped_one"])
    # The dataset itself refuses an AT cut without the field, naming it (never a silent hard-label batch).
    ds = MultiTaskDataset(num_classes=dumps["k"], at_soft_field="at_teacher_probabilities")
    with pytest.raises(ValueError, match=rf"AT cut\(s\) \['{missing}'\] have no teacher output"):
        ds[tag_task(_cuts(tiny_recipe, "at").subset(cut_ids=[missing]), "at")]


def test_teacher_of_another_dimension_is_an_error(train_cli, tiny_recipe, dumps, tmp_path):
    k = dumps["k"]
    with pytest.raises(ValueError, match=rf"outputs {k + 1} classes but the AT head has {k} "):
        _prepare(train_cli, tiny_recipe, tmp_path, dumps["wrong_dim"])


def test_dump_over_other_cuts_is_an_error(train_cli, tiny_recipe, dumps, tmp_path):
    """A dump over an export without one of the AT training cuts (another corpus, an older manifest) is refused."""
    with pytest.raises(ValueError, match=r"dumped over .*other_cuts/at_train_shar \(15 cuts.* does not hold the AT "
                                         r"training cuts"):
        _prepare(train_cli, tiny_recipe, tmp_path, dumps["other_cuts"])


def test_export_ids_sha1_is_what_the_export_records(tiny_recipe, dumps):
    at = _cuts(tiny_recipe, "at")
    pool = read_pool_info(dumps["full"] / "at_train_shar")
    assert export_ids_sha1((c.id for c in at), 6) == pool["ids_sha1"]
    assert export_ids_sha1((c.id for c in at), 5) != pool["ids_sha1"]
    assert export_ids_sha1(reversed([c.id for c in at]), 6) != pool["ids_sha1"]


def test_soft_label_option_checks(train_cli, tmp_path):
    base = ["--recipe-data", str(tmp_path), "--exp-dir", str(tmp_path), "--model-config", "x"]
    parse = train_cli.get_parser().parse_args
    with pytest.raises(ValueError, match="need --at-soft-labels"):
        train_cli.check_args(parse(["--task", "multi", *base, "--at-soft-weight", "0.5"]))
    with pytest.raises(ValueError, match="needs --at-soft-teacher"):
        train_cli.check_args(parse(["--task", "multi", *base, "--at-soft-labels", str(tmp_path)]))
    with pytest.raises(ValueError, match="--task asr trains no AT head"):
        train_cli.check_args(parse(["--task", "asr", *base, "--at-soft-labels", str(tmp_path),
                                    "--at-soft-teacher", "t"]))
    with pytest.raises(ValueError, match=r"1.5 must be in \[0, 1\]"):
        train_cli.check_args(parse(["--task", "at", *base, "--at-soft-labels", str(tmp_path),
                                    "--at-soft-teacher", "t", "--at-soft-weight", "1.5"]))
    args = parse(["--task", "at", *base, "--at-soft-labels", str(tmp_path), "--at-soft-teacher", "t"])
    train_cli.check_args(args)
    assert args.at_soft_weight == 1.0


def test_train_cli_with_both_options(train_cli, tiny_recipe, dumps, tmp_path, monkeypatch):
    """local/train.py main() end to end: --task multi with a frozen encoder and AT soft labels for one epoch."""
    conf = tmp_path / "model.yaml"
    conf.write_text(yaml.safe_dump({"encoder": SMALL_ENCODER, "heads": {
        "asr": {"decoder_dim": 32, "joiner_dim": 32}, "at": {}, "sv": {"emb_dim": 16, "attention_channels": 8}}}))
    exp = tmp_path / "exp"
    monkeypatch.setattr(sys, "argv", [
        "train.py", "--task", "multi", "--recipe-data", str(tiny_recipe["data"]), "--exp-dir", str(exp),
        "--model-config", str(conf), "--num-epochs", "1", "--max-duration", "20", "--valid-fraction", "0.2",
        "--tensorboard", "false", "--encoder-lr-scale", "0.5", "--save-every-n", "1", "--keep-last-k", "0",
        "--freeze-encoder-steps", "3", "--at-soft-labels", str(dumps["full"]), "--at-soft-teacher", "at_teacher",
        "--at-soft-weight", "0.7"])
    train_cli.main()
    log = (exp / "log" / "log-train-rank0.txt").read_text()
    assert "AT: training targets 0.7 * at_teacher probabilities + 0.3 * hard labels" in log
    assert "Encoder frozen for batches 1..3" in log and "Encoder unfrozen from batch 4 on" in log
    # The encoder after 3 steps is the one the run started from (train.py seeds it with --seed 42).
    ckpt = _ckpt(exp / "checkpoint-3.pt")
    fix_random_seed(42)
    init = build_student(ckpt["model_config"]).state_dict()
    assert _changed(ckpt["model"], init, "encoder.") == [] and _changed(ckpt["model"], init, "at_head.")
    assert _changed(_ckpt(exp / "checkpoint-4.pt")["model"], init, "encoder.")
    assert ckpt["params"]["freeze_encoder_steps"] == 3


# ---------------------------------------------------------------------------------------------------- (e)


def test_run_sh_passes_the_options(tiny_recipe, tmp_path):
    """Stages 5 to 8 (with ablations) through run.sh, with a stand-in ``python3`` that records its arguments."""
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$*" >> "$FAKE_LOG"\n')
    fake.chmod(0o755)
    log = tmp_path / "calls.txt"
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}", MT2KD_VENV=str(tmp_path / "no_venv"),
               FAKE_LOG=str(log), finetune_freeze_encoder_steps="5", finetune_at_soft_labels="true",
               ablations="true")
    proc = subprocess.run(["bash", "run.sh", "--recipe-config", "egs/mini/config_tiny.sh", "--data-dir",
                           str(tiny_recipe["data"]), "--exp-dir", str(tmp_path / "exp"), "--stage", "5",
                           "--stop-stage", "8"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    calls = log.read_text()
    # Stage 5: the AT training split exported to Shar and the AT teacher dumped over it.
    assert f"local/export_pool_shar.py --recipe-data {tiny_recipe['data']} --training-split-of at --out-dir " \
           f"{tmp_path}/exp/at_train_shar" in calls
    assert f"local/dump_teacher.py --pool-dir {tmp_path}/exp/at_train_shar --teacher at_teacher " in calls
    soft = f"--at-soft-labels {tmp_path}/exp/teacher_outputs_at_train --at-soft-teacher at_teacher"
    finetunes = {line.split("--exp-dir ")[1].split()[0].rsplit("/", 1)[1]: line
                 for line in log.read_text().splitlines() if "--init-from-kd" in line}
    assert sorted(finetunes) == ["ablation_no_mask", "ablation_only_asr_teacher", "ablation_only_at_teacher",
                                 "ablation_only_sv_teacher", "mt2kd"]
    for name, line in finetunes.items():
        assert "--freeze-encoder-steps 5 " in line, name
        # An ablation that distils without the AT teacher does not get its soft labels either.
        assert (soft in line) == (name not in ("ablation_only_asr_teacher", "ablation_only_sv_teacher")), name
