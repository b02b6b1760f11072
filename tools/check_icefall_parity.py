#!/usr/bin/env python3
"""Check mt2kd's icefall converter against icefall's own code: same keys and shapes, same outputs.

  python tools/check_icefall_parity.py --icefall-dir /path/to/icefall [--presets tiny,xs,tiny-causal,S]

For each preset it builds icefall's zipformer ``AsrModel`` from a checkout of k2-fsa/icefall
(egs/librispeech/ASR/zipformer, as its train.py ``get_model`` does), perturbs every weight, saves it as
``{"model": state_dict}``, converts it with :func:`mt2kd_lib.models.icefall_convert.icefall_to_mt2kd`, and prints the
largest differences of encoder output, transducer logits, CTC log-probs and ``simple_am_proj`` on equal-length
utterances (icefall's ConvNeXt front-end reads the padding of shorter ones; ours masks it). It then writes the mt2kd
model back with ``mt2kd_to_icefall`` and loads that strictly into a fresh icefall model. A causal model uses the
first chunk size on both sides (icefall draws one at random even in eval mode).

icefall is not a dependency of mt2kd: without k2 installed, k2's Swoosh kernels are replaced by their formulas, and
the few ``icefall.utils`` helpers the model files import by small equivalents (forward only).
"""

import argparse
import contextlib
import os
import sys
import types
from pathlib import Path

import torch

from mt2kd_lib.models.encoder_presets import get_config
from mt2kd_lib.models.factory import build_student
from mt2kd_lib.models.icefall_convert import icefall_to_mt2kd, mt2kd_to_icefall


def _provide_missing_modules() -> None:
    """Forward-only stand-ins for k2 and icefall.utils when they are not installed."""
    try:
        import k2  # noqa: F401
    except ImportError:
        k2 = types.ModuleType("k2")
        k2.swoosh_l_forward = k2.swoosh_l = lambda x: torch.logaddexp(torch.zeros_like(x), x - 4.0) - 0.08 * x - 0.035
        k2.swoosh_r_forward = k2.swoosh_r = (
            lambda x: torch.logaddexp(torch.zeros_like(x), x - 1.0) - 0.08 * x - 0.313261687)
        k2.RaggedTensor = type("RaggedTensor", (), {})
        sys.modules["k2"] = k2
    try:
        import icefall.utils  # noqa: F401
    except ImportError:
        utils = types.ModuleType("icefall.utils")

        @contextlib.contextmanager
        def torch_autocast(device_type="cuda", **kw):
            with torch.amp.autocast(device_type="cpu", **kw):
                yield

        def make_pad_mask(lengths, max_len=0):
            n = max(max_len, int(lengths.max()))
            return torch.arange(n, device=lengths.device).expand(lengths.size(0), n) >= lengths.unsqueeze(-1)

        def training_only(*a, **k):
            raise NotImplementedError("not needed for this check")

        utils.torch_autocast, utils.make_pad_mask = torch_autocast, make_pad_mask
        utils.add_sos = utils.time_warp = training_only
        pkg = types.ModuleType("icefall")
        pkg.utils = utils
        sys.modules["icefall"], sys.modules["icefall.utils"] = pkg, utils


def build_icefall_model(cfg, vocab: int, decoder_dim: int, joiner_dim: int, context_size: int):
    from decoder import Decoder
    from joiner import Joiner
    from model import AsrModel
    from scaling import ScheduledFloat
    from subsampling import Conv2dSubsampling
    from zipformer import Zipformer2

    dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
    enc = Zipformer2(
        output_downsampling_factor=2, downsampling_factor=cfg.downsampling_factor,
        num_encoder_layers=cfg.num_encoder_layers, encoder_dim=cfg.encoder_dim,
        encoder_unmasked_dim=cfg.encoder_unmasked_dim, query_head_dim=cfg.query_head_dim,
        pos_head_dim=cfg.pos_head_dim, value_head_dim=cfg.value_head_dim, pos_dim=cfg.pos_dim,
        num_heads=cfg.num_heads, feedforward_dim=cfg.feedforward_dim, cnn_module_kernel=cfg.cnn_module_kernel,
        dropout=dropout, warmup_batches=4000.0, causal=cfg.causal, chunk_size=cfg.chunk_size[:1],
        left_context_frames=cfg.left_context_frames[:1])
    e = max(cfg.encoder_dim)
    return AsrModel(encoder_embed=Conv2dSubsampling(cfg.feature_dim, cfg.encoder_dim[0], dropout=dropout),
                    encoder=enc, decoder=Decoder(vocab, decoder_dim, 0, context_size),
                    joiner=Joiner(e, decoder_dim, joiner_dim, vocab), encoder_dim=e, decoder_dim=decoder_dim,
                    vocab_size=vocab, use_transducer=True, use_ctc=True).eval()


@torch.no_grad()
def check(preset: str, work: Path, vocab: int = 40, decoder_dim: int = 32, joiner_dim: int = 24) -> None:
    cfg = get_config(preset)
    torch.manual_seed(0)
    ice = build_icefall_model(cfg, vocab, decoder_dim, joiner_dim, 2)
    for p in ice.parameters():
        p.add_(torch.randn_like(p) * 0.02)
    torch.save({"model": ice.state_dict()}, work / "icefall.pt")
    imp = icefall_to_mt2kd(work / "icefall.pt")
    ours = build_student(imp.model_config).eval()
    ours.load_state_dict(imp.state)

    x, lens = torch.randn(2, 300, cfg.feature_dim), torch.tensor([300, 300])
    e_i, l_i = ice.forward_encoder(x, lens)
    e_o, l_o = ours.encoder(x, lens)
    y = torch.tensor([[-1, 0, 5, 7, 3], [-1, 0, 2, 2, 11]])
    lg_i = ice.joiner(e_i.unsqueeze(2), ice.decoder(y).unsqueeze(1))
    lg_o = ours.asr_head.joiner(e_o.unsqueeze(2), ours.asr_head.decoder(y).unsqueeze(1))
    diffs = {
        "encoder": (e_i - e_o).abs().max().item(),
        "logits": (lg_i - lg_o).abs().max().item(),
        "ctc": (ice.ctc_output(e_i) - ours.asr_head.ctc_log_probs(e_o)).abs().max().item(),
        "simple_am": (ice.simple_am_proj(e_i) - ours.asr_head.simple_am_proj(e_o)).abs().max().item(),
    }
    back = build_icefall_model(cfg, vocab, decoder_dim, joiner_dim, 2)
    back.load_state_dict(mt2kd_to_icefall(ours)["model"], strict=True)
    diffs["reverse_encoder"] = (back.forward_encoder(x, lens)[0] - e_o).abs().max().item()
    ok = torch.equal(l_i, l_o) and max(diffs.values()) < 1e-4
    print(f"{preset:12s} {'OK ' if ok else 'BAD'} encoder |out| mean {e_o.abs().mean():.3f}; max |diff|: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    if not ok:
        raise SystemExit(f"{preset}: mt2kd and icefall differ")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--icefall-dir", type=Path, required=True, help="a checkout of k2-fsa/icefall")
    p.add_argument("--presets", default="tiny,xs,tiny-causal,S")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/icefall_parity"))
    args = p.parse_args()
    recipe = args.icefall_dir / "egs/librispeech/ASR/zipformer"
    if not (recipe / "zipformer.py").is_file():
        raise FileNotFoundError(f"{recipe}/zipformer.py not found: --icefall-dir must be an icefall checkout")
    if str(recipe) not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        # icefall's recipe modules import each other by bare name (`from scaling import ...`): run again with the
        # recipe folder on PYTHONPATH rather than editing sys.path
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(recipe), os.environ.get("PYTHONPATH")])))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    _provide_missing_modules()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    for preset in args.presets.split(","):
        check(preset, args.work_dir)


if __name__ == "__main__":
    main()
