"""The MT2KD core that otherwise only the end-to-end run touches: task-ID masking of the KD losses, stage 2
starting from a stage-1 checkpoint, and the teacher configs local/train_kd.py reads from the dumps."""

import argparse
import logging
from pathlib import Path

import pytest
import torch

from conftest import REPO, load_script
from mt2kd_lib.data.teacher_shar import CONFIG_NAME, LAYOUT, write_json
from mt2kd_lib.models.factory import build_student, load_model_config
from mt2kd_lib.models.kd_init import check_sv_head_matches_teachers, distilled_head_modules, init_from_kd_checkpoint
from mt2kd_lib.models.kd_model import build_kd_model
from mt2kd_lib.training.trainer import fix_random_seed

ENCODER = {
    "preset": "tiny", "num_encoder_layers": [1], "downsampling_factor": [1], "encoder_dim": [32],
    "feedforward_dim": [64], "num_heads": [2], "cnn_module_kernel": [15], "encoder_unmasked_dim": [32],
    "dropout": 0.0,
}
ASR_T = dict(name="asr_t", task="asr", field="asr_t_embedding", kind="frame", dim=12, frame_shift=0.02)
AT_T = dict(name="at_t", task="at", field="at_t_probabilities", kind="probabilities", dim=5)
SV_T = dict(name="sv_t", task="sv", field="sv_t_embedding", kind="utterance", dim=16, scale=10.0)
T = 60  # 100 Hz input frames: 0.6 s -> 14 student frames at 25 Hz, 28 teacher frames at 50 Hz


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _batch(origins, seed=0):
    """A KD batch as MultiTaskDataset collates it: every cut carries every teacher's output (a no-mask dump)."""
    g = torch.Generator().manual_seed(seed)
    n = len(origins)
    return {
        "features": torch.randn(n, T, 80, generator=g), "feature_lens": torch.full((n,), T),
        "cut_ids": [f"c{i}" for i in range(n)], "task": ["kd"] * n, "origin": list(origins),
        "asr_t_embedding": torch.randn(n, 28, 12, generator=g), "asr_t_embedding_lens": torch.full((n,), 28),
        "asr_t_embedding_mask": torch.ones(n, dtype=torch.bool),
        "at_t_probabilities": torch.rand(n, 5, generator=g), "at_t_probabilities_mask": torch.ones(n, dtype=torch.bool),
        "sv_t_embedding": torch.randn(n, 16, generator=g), "sv_t_embedding_mask": torch.ones(n, dtype=torch.bool),
    }


def _kd(teachers, mask_by_task=True):
    fix_random_seed(0)
    model = build_kd_model({"encoder": ENCODER, "kd": {"mask_by_task": mask_by_task, "teachers": teachers}})
    return model.eval()  # no dropout/layer skipping: exact comparisons


@pytest.mark.parametrize("teacher", [ASR_T, AT_T, SV_T], ids=lambda t: t["name"])
def test_kd_loss_is_zero_without_gradient_on_cuts_of_other_tasks(teacher):
    model = _kd([teacher])
    others = [o for o in ("asr", "at", "sv") if o != teacher["task"]]
    batch = _batch(others + others)  # no cut of the teacher's task, all carrying its output
    batch["features"].requires_grad_(True)
    loss, info = model(batch)
    loss.backward()
    assert float(loss.detach()) == 0.0 and info[f"kd_{teacher['name']}_loss"] == 0.0
    assert info[f"kd_{teacher['name']}_utts"] == 0.0
    assert float(batch["features"].grad.abs().max()) == 0.0
    for name, p in model.named_parameters():
        assert p.grad is None or float(p.grad.abs().max()) == 0.0, name

    # Without task-ID masking the same cuts do train the head (so the zeros above are the mask's doing).
    unmasked = _kd([teacher], mask_by_task=False)
    batch = _batch(others + others)
    loss, info = unmasked(batch)
    loss.backward()
    assert float(loss.detach()) > 0.0 and info[f"kd_{teacher['name']}_utts"] == 4.0
    head = unmasked.kd_heads[teacher["name"]]
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0.0 for p in head.parameters())


def test_masked_cuts_do_not_change_a_mixed_batch():
    """In a mixed batch, a teacher's loss and gradients depend only on the cuts of its task: changing the targets
    and the audio of the other cuts changes nothing."""
    model = _kd([ASR_T, AT_T, SV_T])
    origins = ["asr", "at", "sv", "asr", "at", "sv"]
    a, b = _batch(origins, seed=1), _batch(origins, seed=2)
    for k in ("features", "asr_t_embedding", "at_t_probabilities", "sv_t_embedding"):
        b[k][[0, 3]] = a[k][[0, 3]]  # the ASR cuts agree, the others differ everywhere
    grads = []
    for batch in (a, b):
        model.zero_grad()
        loss, info = model(batch)
        loss.backward()
        grads.append((info["kd_asr_t_loss"], info["kd_asr_t_utts"], model.kd_heads["asr_t"].proj.weight.grad.clone()))
    assert grads[0][1] == grads[1][1] == 2.0
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    torch.testing.assert_close(grads[0][2], grads[1][2])


def _student_cfg(num_classes=5, emb_dim=16):
    return {"encoder": ENCODER, "heads": {
        "asr": {"vocab_size": 20, "decoder_dim": 32, "joiner_dim": 32},
        "at": {"num_classes": num_classes}, "sv": {"emb_dim": emb_dim, "num_speakers": 3}}}


def _save_kd(tmp_path: Path, teachers) -> Path:
    model = _kd(teachers)
    for p in model.parameters():  # not the initial values, so a copy is recognisable
        p.data.add_(0.5)
    path = tmp_path / "kd.pt"
    torch.save({"model": model.state_dict(),
                "model_config": {"encoder": ENCODER, "kd": {"mask_by_task": True, "teachers": teachers}}}, path)
    return path


def test_stage2_starts_from_the_kd_encoder_and_drops_kd_heads(tmp_path, caplog):
    path = _save_kd(tmp_path, [ASR_T, AT_T, SV_T])
    kd_state = torch.load(path, weights_only=False)["model"]
    fix_random_seed(1)
    student = build_student(_student_cfg())
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    with caplog.at_level(logging.WARNING):
        counts = init_from_kd_checkpoint(student, path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # every head of matching sizes moved
    state = student.state_dict()
    enc = [k for k in kd_state if k.startswith("encoder.")]
    assert enc and counts["encoder"] == len(enc)
    for k in enc:
        assert torch.equal(state[k], kd_state[k]), k
    assert not any(k.startswith("kd_heads.") for k in state) and not hasattr(student, "kd_heads")
    # the AT teacher's head predicts the same classes: it becomes the AT head
    for k, v in kd_state.items():
        if k.startswith("kd_heads.at_t."):
            assert torch.equal(state["at_head." + k[len("kd_heads.at_t."):]], v), k
    # the SV teacher's pooling/embedding layers become the SV head's; its speaker classifier stays new
    sv_copied = [k for k in kd_state if k.startswith("kd_heads.sv_t.")]
    assert sv_copied and all(torch.equal(state["sv_head." + k[len("kd_heads.sv_t."):]], kd_state[k]) for k in sv_copied)
    assert all(torch.equal(state[k], fresh[k]) for k in state if k.startswith("sv_head.classifier"))
    # the ASR head (transducer) has nothing from the frame-level KD head
    assert all(torch.equal(state[k], fresh[k]) for k in state if k.startswith("asr_head."))


def test_stage2_init_keeps_mismatched_heads_new_and_refuses_another_encoder(tmp_path, caplog):
    path = _save_kd(tmp_path, [ASR_T, AT_T, SV_T])
    fix_random_seed(1)
    student = build_student(_student_cfg(num_classes=7))  # other AT classes than the AT teacher
    fresh = {k: v.clone() for k, v in student.state_dict().items()}
    init_from_kd_checkpoint(student, path)
    assert all(torch.equal(v, fresh[k]) for k, v in student.state_dict().items() if k.startswith("at_head."))
    # an SV head of other sizes than the KD head starts fresh too, and says which sizes would have matched
    with caplog.at_level(logging.WARNING):
        init_from_kd_checkpoint(build_student(_student_cfg(emb_dim=8)), path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "sv_t" in r.getMessage()]
    assert warned and "emb_dim" in warned[0] and "16" in warned[0]
    other = dict(_student_cfg(), encoder=dict(ENCODER, encoder_dim=[48], encoder_unmasked_dim=[48]))
    with pytest.raises(ValueError, match="does not match the student's"):
        init_from_kd_checkpoint(build_student(other), path)


def test_stage2_starts_from_the_kd_mean_weights_and_scales_the_distilled_heads_lr(tmp_path):
    """weights="mean" takes the checkpoint's model_avg; the distilled head parts (AT head, SV pooling and
    embedding, not the new speaker classifier) are the ones --distilled-heads-lr-scale slows down."""
    from mt2kd_lib.training.optim import get_parameter_groups_with_lrs

    path = _save_kd(tmp_path, [ASR_T, AT_T, SV_T])
    ckpt = torch.load(path, weights_only=False)
    with pytest.raises(ValueError, match="no model_avg"):
        init_from_kd_checkpoint(build_student(_student_cfg()), path, weights="mean")
    ckpt["model_avg"] = {k: v + 1.0 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, path)
    student = build_student(_student_cfg())
    counts = init_from_kd_checkpoint(student, path, weights="mean")
    key = next(k for k in ckpt["model_avg"] if k.startswith("encoder.") and ckpt["model_avg"][k].is_floating_point())
    assert torch.equal(student.state_dict()[key], ckpt["model_avg"][key])
    parts = distilled_head_modules(student, counts)
    assert student.at_head in parts and student.sv_head.proj in parts and student.sv_head.pooling in parts
    assert student.sv_head.classifier not in parts
    for m in parts:
        m.lr_scale = 0.2
    slow = {id(p) for m in parts for p in m.parameters()}
    for g in get_parameter_groups_with_lrs(student, 1.0):
        assert all((id(p) in slow) == (g["lr"] == pytest.approx(0.2)) for p in g["params"])


def test_stage1_warns_before_training_when_the_sv_teacher_dim_is_not_the_sv_head_s(caplog):
    """The mismatch that stage 2 would find after the whole KD run is named when stage 1 starts."""
    teachers = [ASR_T, AT_T, SV_T]
    assert check_sv_head_matches_teachers(_student_cfg(emb_dim=16), teachers) == []
    with caplog.at_level(logging.WARNING):
        assert check_sv_head_matches_teachers(_student_cfg(emb_dim=8), teachers) == ["sv_t"]
    assert "emb_dim" in caplog.text and "16" in caplog.text


@pytest.fixture(scope="module")
def train_kd():
    return load_script("local/train_kd.py")


def _dump_config(root: Path, teacher: str, task: str, level: str, kind: str, dim: int, frame_shift=None) -> None:
    (root / teacher).mkdir(parents=True)
    spec = dict(name=teacher, task=task, level=level, output_kind=kind, dim=dim, frame_shift=frame_shift,
                sampling_rate=16000, min_duration=0.1)
    write_json(root / teacher / CONFIG_NAME, dict(layout=LAYOUT, teacher=teacher, field=f"{teacher}_{kind}",
                                                  spec=spec, tick_power=-8, pool={}))


def test_teacher_configs_read_by_train_kd(train_kd, tmp_path):
    _dump_config(tmp_path, "whisper", "asr", "frame", "embedding", 1280, 0.02)
    _dump_config(tmp_path, "beats", "at", "utterance", "probabilities", 527)
    _dump_config(tmp_path, "ecapa", "sv", "utterance", "embedding", 192)

    def configs(scales="", stack=None):
        return train_kd.teacher_configs(argparse.Namespace(teacher_dir=tmp_path, teachers="whisper,beats,ecapa",
                                                           scales=scales), {"sv": stack, "at": None})

    got = {t["name"]: t for t in configs()}
    assert got["whisper"] == dict(name="whisper", task="asr", field="whisper_embedding", kind="frame", dim=1280,
                                  frame_shift=0.02, scale=1.0, input_stack=None)
    assert got["beats"]["kind"] == "probabilities" and got["beats"]["dim"] == 527 and got["beats"]["scale"] == 1.0
    assert got["ecapa"]["kind"] == "utterance" and got["ecapa"]["scale"] == 10.0  # the paper's 1 / 1 / 10
    got = {t["name"]: t for t in configs("whisper=0.5,ecapa=3", stack=2)}
    assert (got["whisper"]["scale"], got["beats"]["scale"], got["ecapa"]["scale"]) == (0.5, 1.0, 3.0)
    assert got["ecapa"]["input_stack"] == 2 and got["whisper"]["input_stack"] is None
    with pytest.raises(ValueError, match=r"--scales names \['bert'\]"):
        configs("bert=2")
    # what train_kd builds from them: one KD head per teacher, shaped by the dump's spec
    model = build_kd_model({"encoder": ENCODER, "kd": {"mask_by_task": True, "teachers": configs()}})
    assert model.kd_heads["whisper"].proj.out_features == 1280 * 2  # 25 Hz student, 50 Hz teacher
    with pytest.raises(FileNotFoundError, match="no dump of teacher 'hubert'"):
        train_kd.teacher_configs(argparse.Namespace(teacher_dir=tmp_path, teachers="hubert", scales=""))


def test_kd_heads_read_the_stacks_of_the_stage2_heads(train_kd):
    """The KD SV head reads the stack the model config's SV head reads (stage 2 starts from the distilled pooling),
    unless --sv-input-stack says otherwise."""
    cfg = {"encoder": ENCODER, "heads": {"asr": {}, "at": {"input_stack": None}, "sv": {"input_stack": 1}}}
    assert train_kd.kd_input_stacks(cfg, None) == {"at": None, "sv": 1}
    assert train_kd.kd_input_stacks(cfg, "0") == {"at": None, "sv": 0}
    assert train_kd.kd_input_stacks(cfg, "output") == {"at": None, "sv": None}
    assert train_kd.kd_input_stacks({"encoder": ENCODER}, None) == {"at": None, "sv": None}
    shipped = load_model_config(REPO / "egs/mini/conf/student_tiny.yaml")
    assert train_kd.kd_input_stacks(shipped, None)["sv"] == shipped["heads"]["sv"]["input_stack"]
