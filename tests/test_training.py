"""The trainer, StudentModel and data module on a tiny synthetic corpus built here (seconds).

(1) a tiny Zipformer2 transducer overfits one batch until greedy search returns the references;
(2) 2 epochs straight == 1 epoch + resume (bit-exact parameters);
(3) 2-process gloo DDP keeps the replicas in sync;
(4) non-finite per-utterance losses are skipped and counted, the rest still trains;
(5) checkpoint averaging equals the manual mean.
"""

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.features.io import NumpyFilesWriter

from mt2kd_lib.data.bpe import load_bpe, train_bpe
from mt2kd_lib.data.contract import read_class_labels
from mt2kd_lib.data.datamodule import (
    encoder_output_frames,
    filter_cuts,
    make_spec_augment,
    make_train_dl,
    speaker_map_from_cuts,
    tag_task,
)
from mt2kd_lib.data.dataset import MultiTaskDataset, add_tokens
from mt2kd_lib.data.features import compute_fbank_for_contract, fbank_cuts_path
from mt2kd_lib.data.mini.config import MiniConfig
from mt2kd_lib.data.mini.prepare import prepare_mini
from mt2kd_lib.decoding.greedy_search import greedy_search_batch
from mt2kd_lib.models.factory import build_student, complete_model_config, model_from_checkpoint
from mt2kd_lib.training.checkpoint import (
    average_checkpoints,
    epoch_checkpoints_for_avg,
    find_checkpoints,
    save_checkpoint,
)
from mt2kd_lib.training.optim import ScaledAdam, get_parameter_groups_with_lrs
from mt2kd_lib.training.trainer import Trainer, TrainParams, fix_random_seed
from conftest import load_script

# A one-stack Zipformer2 (the "tiny" preset reduced further) so that CPU tests take seconds.
SMALL_ENCODER = {
    "preset": "tiny", "num_encoder_layers": [1], "downsampling_factor": [1], "encoder_dim": [48],
    "feedforward_dim": [96], "num_heads": [2], "cnn_module_kernel": [15], "encoder_unmasked_dim": [48],
    "dropout": 0.0,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """egs/mini at its smallest: manifests, fbank and a BPE lang dir."""
    torch.set_num_threads(1)  # the machine is shared; one thread is also faster for these tiny shapes
    root = tmp_path_factory.mktemp("mini_train")
    cfg = MiniConfig(
        seed=3, num_train_speakers=4, num_dev_speakers=2, num_test_speakers=3, asr_train=8, asr_teacher_extra=1,
        asr_dev=2, asr_test=3, min_words=4, max_words=5, sv_utts_per_train_speaker=3, sv_utts_per_test_speaker=2,
        sv_teacher_extra_utts_per_train_speaker=1,
        sv_trials=10, at_train=6, at_teacher_extra=1, at_eval=4, at_clip_seconds=1.0, at_max_events=2,
    )
    prepare_mini(cfg, root)
    compute_fbank_for_contract(root / "manifests", root / "fbank")
    asr = CutSet.from_file(fbank_cuts_path(root / "fbank", "asr", "train"))
    train_bpe([c.supervisions[0].text for c in asr], root / "lang", vocab_size=64)
    return {
        "root": root,
        "asr": asr,
        "at": CutSet.from_file(fbank_cuts_path(root / "fbank", "at", "train")),
        "sv": CutSet.from_file(fbank_cuts_path(root / "fbank", "sv", "train")),
        "sp": load_bpe(root / "lang"),
        "num_classes": len(read_class_labels(root / "manifests")),
    }


def model_config(corpus, heads=("asr",), **loss):
    cfg = {
        "encoder": SMALL_ENCODER,
        "heads": {
            "asr": {"decoder_dim": 64, "joiner_dim": 64, "use_ctc": loss.pop("use_ctc", False)},
            "at": {},
            "sv": {"emb_dim": 32, "loss": "softmax", "attention_channels": 16},
        },
        "loss": {"warm_step": 5, **loss},
    }
    cfg["heads"] = {h: cfg["heads"][h] for h in heads}
    speakers = speaker_map_from_cuts(corpus["sv"]) if "sv" in heads else None
    return complete_model_config(cfg, corpus["root"] / "lang", corpus["root"] / "manifests", speakers)


def test_dataset_masks_targets_and_bad_features(corpus, tmp_path):
    spk = speaker_map_from_cuts(corpus["sv"])
    ds = MultiTaskDataset(spk, corpus["num_classes"])
    cuts = CutSet.from_cuts(list(tag_task(corpus["asr"].subset(first=2), "asr"))
                            + list(tag_task(corpus["at"].subset(first=2), "at"))
                            + list(tag_task(corpus["sv"].subset(first=2), "sv")))
    b = add_tokens(ds[cuts], corpus["sp"].encode)
    assert b["features"].shape[0] == 6 and b["features"].shape[2] == 80
    assert b["feature_lens"].max() == b["features"].shape[1]
    for i, cid in enumerate(b["cut_ids"]):
        cut = cuts[cid]
        task = b["task"][i]
        assert bool(b["asr_mask"][i]) == (task == "asr") and bool(b["at_mask"][i]) == (task == "at")
        assert bool(b["sv_mask"][i]) == (task == "sv")
        if task == "asr":
            assert corpus["sp"].decode(b["tokens"][i]) == cut.supervisions[0].text
        if task == "at":
            labels = [int(x) for x in cut.supervisions[0].custom["audio_event"].split(";")]
            assert torch.nonzero(b["at_targets"][i]).flatten().tolist() == sorted(labels)
        else:
            assert b["at_targets"][i].sum() == 0
        want = spk[cut.supervisions[0].speaker] if task == "sv" else -1
        assert int(b["speaker_idx"][i]) == want
    # NaN features: the error names the cut.
    cut = corpus["asr"][0]
    arr = cut.load_features()
    arr[3, 5] = np.nan
    with NumpyFilesWriter(tmp_path / "bad") as w:
        key = w.write(cut.id, arr)
    bad = dataclasses.replace(cut, features=dataclasses.replace(
        cut.features, storage_type=w.name, storage_path=str(tmp_path / "bad"), storage_key=key))
    with pytest.raises(ValueError, match=cut.id):
        ds[tag_task(CutSet.from_cuts([bad]), "asr")]
    with pytest.raises(ValueError, match="no features"):
        ds[tag_task(CutSet.from_cuts([dataclasses.replace(cut, features=None)]), "asr")]
    with pytest.raises(ValueError, match="custom\\['task'\\]"):
        ds[corpus["asr"].subset(first=1)]


def test_overfit_one_batch_greedy_equals_reference(corpus):
    """Pruned RNN-T on 2 utterances; prune_range=2 keeps the joiner to <= 1 symbol per frame, which is
    what greedy search decodes (a wider range lets a tiny bidirectional model emit everything in a burst)."""
    sp = corpus["sp"]
    ratio = {c.id: encoder_output_frames(c.num_frames) / len(sp.encode(c.supervisions[0].text)) for c in corpus["asr"]}
    ids = sorted(ratio, key=lambda i: -ratio[i])[:2]  # the two slowest-spoken utterances
    ds = MultiTaskDataset()
    batch = add_tokens(ds[tag_task(corpus["asr"].subset(cut_ids=ids), "asr")], sp.encode)
    fix_random_seed(0)
    model = build_student(model_config(corpus, prune_range=2))
    lr = 0.15
    opt = ScaledAdam(get_parameter_groups_with_lrs(model, lr=lr, include_names=True), lr=lr, clipping_scale=2.0)
    refs = [sp.decode(t) for t in batch["tokens"]]
    hyps = None
    for step in range(1, 301):
        model.train()
        loss, info = model(batch, step)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                enc, enc_lens = model.asr_encoder_out(batch["features"], batch["feature_lens"])
                hyps = [sp.decode(h) for h in greedy_search_batch(model.asr_head, enc, enc_lens)]
            if hyps == refs:
                break
    assert hyps == refs, f"after {step} steps: {hyps} != {refs} (loss {info['loss']:.3f})"
    assert info["asr_utts"] == 2 and info["skipped_utts"] == 0


def _trainer(corpus, exp_dir: Path, num_epochs: int, start_epoch: int = 1, heads=("asr", "at", "sv"),
             world_size: int = 1, rank: int = 0, **kw) -> Trainer:
    cfg = model_config(corpus, heads)
    fix_random_seed(1)
    model = build_student(cfg)
    spk = speaker_map_from_cuts(corpus["sv"]) if "sv" in heads else None
    ds = MultiTaskDataset(spk, corpus["num_classes"] if "at" in heads else None, spec_augment=make_spec_augment())
    sets = {"asr": corpus["asr"].subset(first=4), "at": corpus["at"].subset(first=4), "sv": corpus["sv"].subset(first=6)}
    dl = make_train_dl({h: sets[h] for h in heads}, max_duration=7.0, dataset=ds, seed=5,
                       world_size=world_size, rank=rank)
    params = TrainParams(exp_dir=str(exp_dir), num_epochs=num_epochs, start_epoch=start_epoch, tensorboard=False,
                         log_interval=1, **kw)
    return Trainer(model, params, dl, None, model_config=cfg, world_size=world_size, rank=rank,
                   batch_transform=lambda b: add_tokens(b, corpus["sp"].encode))


def test_resume_is_exact(corpus, tmp_path):
    straight = _trainer(corpus, tmp_path / "a", num_epochs=2, save_every_n=2)
    straight.fit()
    first = _trainer(corpus, tmp_path / "b", num_epochs=1)
    first.fit()
    resumed = _trainer(corpus, tmp_path / "b", num_epochs=2, start_epoch=2)
    resumed.fit()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    e1 = torch.load(tmp_path / "b" / "epoch-1.pt", weights_only=False)["model"]
    assert any(not torch.equal(a[k], e1[k]) for k in a), "epoch 2 did not change the model"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume: {(a[k].float() - b[k].float()).abs().max()}"
    assert straight.params.batch_idx_train == resumed.params.batch_idx_train > 2
    # Mid-epoch: resume from checkpoint-2.pt (sampler state + RNG states) is exact as well.
    (tmp_path / "c").mkdir()
    shutil.copyfile(tmp_path / "a" / "checkpoint-2.pt", tmp_path / "c" / "checkpoint-2.pt")
    mid = _trainer(corpus, tmp_path / "c", num_epochs=2, start_batch=2)
    mid.fit()
    c = mid.model.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a), "resuming from checkpoint-2.pt is not exact"
    # the saved model rebuilds from its checkpoint alone
    rebuilt = model_from_checkpoint(tmp_path / "b" / "epoch-2.pt")
    assert all(torch.equal(v, a[k]) for k, v in rebuilt.state_dict().items())


def test_model_avg_is_the_mean_of_the_weights_between_checkpoints(corpus, tmp_path):
    """icefall's model_avg: epoch-2.pt and epoch-1.pt give the mean of the weights after each batch of epoch 2
    (every batch folded in with average_period=1; checkpoint-B.pt holds the weights after batch B), and it
    resumes exactly."""
    from mt2kd_lib.evaluation.evaluate import load_averaged_model
    from mt2kd_lib.training.model_avg import average_between

    exp = tmp_path / "a"
    straight = _trainer(corpus, exp, num_epochs=2, save_every_n=1, keep_last_k=0, average_period=1)
    straight.fit()
    b1 = torch.load(exp / "epoch-1.pt", weights_only=False)["params"]["batch_idx_train"]
    b2 = straight.params.batch_idx_train
    assert b2 - b1 >= 2
    snaps = [torch.load(exp / f"checkpoint-{b}.pt", weights_only=False)["model"] for b in range(b1 + 1, b2 + 1)]
    got = average_between(exp / "epoch-2.pt", exp / "epoch-1.pt")
    floats = [k for k, v in snaps[-1].items() if v.is_floating_point()]
    for k in floats:
        want = torch.stack([s[k].double() for s in snaps]).mean(0)
        torch.testing.assert_close(got[k].double(), want, rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(got[k], snaps[-1][k]) for k in floats), "the mean equals the last weights"
    since_start = average_between(exp / "epoch-2.pt")  # no start: every batch since batch 0
    first = torch.load(exp / "checkpoint-1.pt", weights_only=False)["model"]
    k = floats[0]
    torch.testing.assert_close(since_start[k].double(), torch.stack(
        [torch.load(exp / f"checkpoint-{b}.pt", weights_only=False)["model"][k].double()
         for b in range(1, b2 + 1)]).mean(0), rtol=1e-5, atol=1e-6)
    assert first[k].shape == since_start[k].shape
    model = load_averaged_model(exp, 2, 1, use_averaged_model=True)
    assert all(torch.equal(v, got[n]) for n, v in model.state_dict().items())
    # resume from epoch 1 continues the same average
    (tmp_path / "b").mkdir()
    shutil.copyfile(exp / "epoch-1.pt", tmp_path / "b" / "epoch-1.pt")
    _trainer(corpus, tmp_path / "b", num_epochs=2, start_epoch=2, average_period=1).fit()
    resumed = torch.load(tmp_path / "b" / "epoch-2.pt", weights_only=False)["model_avg"]
    straight_avg = torch.load(exp / "epoch-2.pt", weights_only=False)["model_avg"]
    assert all(torch.equal(resumed[k], straight_avg[k]) for k in straight_avg)
    # a checkpoint without model_avg is refused with the file's name
    (tmp_path / "c").mkdir()
    _trainer(corpus, tmp_path / "c", num_epochs=1, average_period=0).fit()
    with pytest.raises(ValueError, match="epoch-1.pt: no model_avg"):
        load_averaged_model(tmp_path / "c", 1, 1, use_averaged_model=True)


def _ddp_worker(rank: int, world_size: int, corpus: dict, exp_dir: str, port: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        trainer = _trainer(corpus, Path(exp_dir), num_epochs=1, heads=("asr",), world_size=world_size, rank=rank)
        trainer.fit()
        torch.save({"model": trainer.model.module.state_dict(), "batches": trainer.params.batch_idx_train},
                   Path(exp_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _two_ranks(worker, data: dict, tmp_path: Path):
    """Run ``worker`` as 2 DDP processes on a free local port; returns what ranks 0 and 1 saved."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(worker, args=(2, data, str(tmp_path), port), nprocs=2, join=True, start_method="fork")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def test_ddp_two_processes_stay_in_sync(corpus, tmp_path):
    data = {k: corpus[k] for k in ("asr", "at", "sv", "sp", "num_classes", "root")}
    r0, r1 = _two_ranks(_ddp_worker, data, tmp_path)
    assert r0["batches"] == r1["batches"] >= 1
    fix_random_seed(1)
    init = build_student(model_config(corpus, ("asr",))).state_dict()
    assert any(not torch.equal(init[k], r0["model"][k]) for k in init), "DDP training did not update the model"
    for k, v in r0["model"].items():
        assert torch.allclose(v.float(), r1["model"][k].float(), atol=1e-6), f"{k} differs between ranks"
    assert (tmp_path / "epoch-1.pt").is_file()  # rank 0 saved


def _ddp_uneven_worker(rank: int, world_size: int, corpus: dict, exp_dir: str, port: int) -> None:
    """Rank 0 has 4 utterances, rank 1 only 2 (as Shar shards that do not divide evenly over ranks): each rank's
    sampler sees only its own cuts (world_size=1), as in the iterable Shar path."""
    import datetime

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=60))  # a rank left waiting fails the test, no hang
    try:
        cfg = model_config(corpus, ("asr",))
        fix_random_seed(1)
        model = build_student(cfg)
        dl = make_train_dl({"asr": corpus["asr"].subset(first=4 if rank == 0 else 2)}, max_duration=2.5,
                           dataset=MultiTaskDataset(), seed=5, world_size=1, rank=0)
        params = TrainParams(exp_dir=exp_dir, num_epochs=2, tensorboard=False, log_interval=1)
        trainer = Trainer(model, params, dl, None, model_config=cfg, world_size=world_size, rank=rank,
                          batch_transform=lambda b: add_tokens(b, corpus["sp"].encode))
        own = sum(1 for _ in dl)
        trainer.fit()
        torch.save({"model": trainer.model.module.state_dict(), "batches": trainer.params.batch_idx_train,
                    "own": own}, Path(exp_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_with_uneven_batches_stop_together(corpus, tmp_path):
    r0, r1 = _two_ranks(_ddp_uneven_worker, {k: corpus[k] for k in ("asr", "sp", "num_classes", "root")}, tmp_path)
    assert r0["own"] > r1["own"] >= 1  # uneven, else the test shows nothing
    assert r0["batches"] == r1["batches"] == 2 * r1["own"]  # both epochs end when rank 1 runs out
    for k, v in r0["model"].items():
        assert torch.allclose(v.float(), r1["model"][k].float(), atol=1e-6), f"{k} differs between ranks"


def test_nonfinite_utterances_are_skipped_and_counted(corpus, tmp_path):
    sp = corpus["sp"]
    cfg = model_config(corpus, ("asr",), use_ctc=True, ctc_scale=0.3)
    fix_random_seed(2)
    model = build_student(cfg)
    cuts = tag_task(corpus["asr"].subset(first=3), "asr")
    batch = add_tokens(MultiTaskDataset()[cuts], sp.encode)
    frames = encoder_output_frames(int(batch["feature_lens"][1]))
    # Utterance 1 gets more tokens than encoder frames: its CTC loss is +inf.
    bad_batch = dict(batch, tokens=[batch["tokens"][0], batch["tokens"][1] * (frames // len(batch["tokens"][1]) + 2),
                                    batch["tokens"][2]])
    model.eval()  # no dropout: the two forwards below must see the same network
    with torch.no_grad():
        loss, info = model(bad_batch, 100)
        sub = {k: (v[[0, 2]] if isinstance(v, torch.Tensor) else [v[0], v[2]]) for k, v in batch.items()}
        ref_loss, ref_info = model(sub, 100)
    assert math.isfinite(float(loss))
    assert info["skipped_utts"] == 1 and info["asr_utts"] == 2
    assert model.nonfinite_counter["asr_loss"] == 1
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-5)
    assert info["pruned_loss"] == pytest.approx(ref_info["pruned_loss"], rel=1e-5)
    # Through the trainer: the step happens on the finite part and the skip is counted.
    params = TrainParams(exp_dir=str(tmp_path), tensorboard=False)
    trainer = Trainer(model, params, [], None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    trainer.train_step(bad_batch)
    assert params.skipped_utts == 1 and params.skipped_batches == 0
    after = model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_average_and_listing(corpus, tmp_path):
    cfg = model_config(corpus, ("at", "sv"))
    states = []
    for epoch in (1, 2, 3):
        fix_random_seed(10 + epoch)
        model = build_student(cfg)
        with torch.no_grad():  # make the BN counters differ too
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.num_batches_tracked.fill_(epoch)
        save_checkpoint(tmp_path / f"epoch-{epoch}.pt", model, params={"epoch": epoch}, model_config=cfg)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert not list(tmp_path.glob(".*tmp*")), "temporary checkpoint files were left behind"
    assert [p.name for p in find_checkpoints(tmp_path)] == ["epoch-3.pt", "epoch-2.pt", "epoch-1.pt"]
    paths = epoch_checkpoints_for_avg(tmp_path, epoch=3, avg=2)
    assert [p.name for p in paths] == ["epoch-2.pt", "epoch-3.pt"]
    avg = average_checkpoints(paths)
    for k, v in avg.items():
        if v.is_floating_point():
            manual = (states[1][k].double() + states[2][k].double()) / 2
            assert torch.allclose(v.double(), manual, atol=1e-7), k
        else:
            assert torch.equal(v, states[2][k]), k
    assert any(not torch.equal(avg[k], states[2][k]) for k in avg if avg[k].is_floating_point())
    with pytest.raises(ValueError, match="avg 4"):
        epoch_checkpoints_for_avg(tmp_path, epoch=3, avg=4)
    with pytest.raises(FileNotFoundError, match="epoch-9"):
        average_checkpoints([tmp_path / "epoch-9.pt"])


def test_filter_drops_cuts_with_too_many_tokens(corpus):
    sp = corpus["sp"]
    long_text = dataclasses.replace(corpus["asr"][0].supervisions[0], text=" ".join(["BIRD"] * 60))
    bad = dataclasses.replace(corpus["asr"][0], id="too-many-tokens", supervisions=[long_text])
    cuts = CutSet.from_cuts(list(corpus["asr"]) + [bad])
    kept = filter_cuts(cuts, "asr train", encode=sp.encode)
    assert "too-many-tokens" not in kept.ids and len(kept) == len(corpus["asr"])


def test_train_and_evaluate_clis(corpus, tmp_path, monkeypatch):
    """local/train.py (multi-task, 1 epoch) then local/evaluate.py --task all on the tiny corpus."""
    import json
    import sys

    import yaml

    conf = tmp_path / "model.yaml"
    conf.write_text(yaml.safe_dump({
        "encoder": SMALL_ENCODER,
        "heads": {"asr": {"decoder_dim": 64, "joiner_dim": 64}, "at": {},
                  "sv": {"emb_dim": 32, "attention_channels": 16}},
        "loss": {"warm_step": 5},
    }))
    exp = tmp_path / "exp"
    common = ["--recipe-data", str(corpus["root"]), "--lang-dir", str(corpus["root"] / "lang"), "--exp-dir", str(exp)]
    # In-process (the scripts' main() with their argv): saves two interpreter + torch start-ups.
    for script, argv in (
        ("train.py", ["--task", "multi", "--model-config", str(conf), "--num-epochs", "1", "--max-duration", "10",
                      "--log-interval", "1", "--valid-fraction", "0.25", *common]),
        ("evaluate.py", ["--epoch", "1", "--avg", "1", "--task", "all", *common,
                         "--decoding-methods", "greedy_search,fast_beam_search,ctc_greedy_search"]),
    ):
        module = load_script(f"local/{script}")
        monkeypatch.setattr(sys, "argv", [script, *argv])
        module.main()
    log = (exp / "log" / "log-train-rank0.txt").read_text()
    assert "Epoch 1, batch 1, loss[" in log and "tot_loss[" in log and "validation:" in log
    results = json.loads((exp / "results.json").read_text())
    assert results["system"] == "exp" and results["params"] > 0
    assert 0 <= results["asr"]["wer"]["test"] <= 200
    assert 0 <= results["at"]["mAP"] <= 1
    assert 0 <= results["sv"]["eer"]["O"] <= 100 and results["sv"]["min_dcf"]["O"] >= 0
    assert (exp / "greedy_search" / "wer-summary-test.txt").is_file()
    assert (exp / "greedy_search" / "det-sv.png").is_file()
    # The other decoding methods: run (WER and real-time factor) or recorded with the reason they could not.
    by_method = results["asr"]["methods"]
    assert by_method["greedy_search"]["wer"] == results["asr"]["wer"] and by_method["greedy_search"]["rtf"] > 0
    assert by_method["ctc_greedy_search"] == {"skipped": "needs a CTC head (use_ctc)"}
    from mt2kd_lib.lang.graphs import k2_available

    if k2_available():
        assert "wer" in by_method["fast_beam_search"]
        assert (exp / "fast_beam_search" / "wer-summary-test.txt").is_file()
    else:
        assert by_method["fast_beam_search"] == {"skipped": "needs k2"}
