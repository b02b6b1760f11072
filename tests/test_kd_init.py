"""Stage 2 starts from stage 1: the KD encoder is copied whole, and the SV / AT KD heads become the task heads
when their sizes match (the distilled embedding is kept); a head of other sizes starts fresh with a warning."""

import logging

import pytest
import torch

from mt2kd_lib.models.encoder_presets import build_encoder
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.kd_init import init_from_kd_checkpoint
from mt2kd_lib.models.kd_model import KDModel, KDTeacherConfig

TEACHERS = [KDTeacherConfig(name="asr_t", task="asr", field="asr_t_embedding", kind="frame", dim=96, frame_shift=0.04),
            KDTeacherConfig(name="sv_t", task="sv", field="sv_t_embedding", kind="utterance", dim=256)]


def _kd_checkpoint(tmp_path):
    torch.manual_seed(0)
    enc_cfg = {"preset": "tiny", "dropout": 0.0}
    kd = KDModel(build_encoder(enc_cfg), TEACHERS)
    for p in kd.parameters():  # not the init values: a copy must be a real copy
        p.data.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "kd-epoch-1.pt"
    torch.save({"model": kd.state_dict(), "model_config": {"encoder": enc_cfg, "kd": kd.config}}, path)
    return kd, path


def _student(emb_dim, attention_channels):
    return build_student({"encoder": {"preset": "tiny", "dropout": 0.0},
                          "heads": {"sv": {"emb_dim": emb_dim, "attention_channels": attention_channels,
                                           "num_speakers": 5, "loss": "aam"}}})


def test_encoder_and_matching_sv_head_are_copied(tmp_path, caplog):
    kd, path = _kd_checkpoint(tmp_path)
    student = _student(256, 128)
    with caplog.at_level(logging.WARNING):
        counts = init_from_kd_checkpoint(student, path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for k, v in kd.encoder.state_dict().items():
        assert torch.equal(student.encoder.state_dict()[k], v), k
    kd_sv = {k[len("kd_heads.sv_t."):]: v for k, v in kd.state_dict().items() if k.startswith("kd_heads.sv_t.")}
    assert counts["sv_head_from_sv_t"] == len(kd_sv)
    for k, v in kd_sv.items():
        assert torch.equal(student.sv_head.state_dict()[k], v), k
    # the frame teacher's head has no stage-2 counterpart: nothing of it lands in the student
    assert "asr_head_from_asr_t" not in counts


def test_sv_head_of_other_sizes_starts_fresh_with_a_warning(tmp_path, caplog):
    _, path = _kd_checkpoint(tmp_path)
    student = _student(128, 64)
    with caplog.at_level(logging.WARNING):
        init_from_kd_checkpoint(student, path)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "sv_t" in warned[0] and "emb_dim" in warned[0] and "256" in warned[0]


def test_a_kd_encoder_of_another_preset_is_refused(tmp_path):
    _, path = _kd_checkpoint(tmp_path)
    student = build_student({"encoder": {"preset": "xs"}, "heads": {"sv": {"num_speakers": 5}}})
    with pytest.raises(ValueError, match="does not match"):
        init_from_kd_checkpoint(student, path)
