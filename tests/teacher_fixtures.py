"""Write tiny random-weight checkpoints in the official formats and key layouts of each teacher.

The BEATs and SpeechBrain ECAPA key lists are spelled out here independently of mt2kd_lib's model code, so a
strict load in the tests checks our modules against the published layouts rather than against themselves.
"""

from dataclasses import asdict
from pathlib import Path
from typing import Dict, List

import torch

BEATS_TINY_CFG: Dict = dict(
    input_patch_size=16, embed_dim=32, conv_bias=False, encoder_layers=2, encoder_embed_dim=48,
    encoder_ffn_embed_dim=64, encoder_attention_heads=4, activation_fn="gelu", layer_norm_first=False,
    deep_norm=True, conv_pos=16, conv_pos_groups=4, relative_position_embedding=True, num_buckets=32,
    max_distance=64, gru_rel_pos=True, finetuned_model=True, predictor_class=527,
    # training-only fields present in official cfgs; the loader must ignore them
    dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.05, dropout_input=0.0,
    layer_wise_gradient_decay_ratio=0.6, predictor_dropout=0.0,
)


def write_tiny_whisper(path: Path, n_audio_ctx: int = 50, n_mels: int = 80, seed: int = 0) -> Path:
    """An official-format Whisper checkpoint (fp16 weights, like the released ones) with a tiny model."""
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    dims = ModelDimensions(n_mels=n_mels, n_audio_ctx=n_audio_ctx, n_audio_state=32, n_audio_head=4,
                           n_audio_layer=3, n_vocab=64, n_text_ctx=8, n_text_state=32, n_text_head=4,
                           n_text_layer=1)
    model = Whisper(dims)
    with torch.no_grad():
        model.decoder.positional_embedding.normal_(0, 0.02)  # created with torch.empty
        for name, p in model.encoder.named_parameters():
            if name.endswith("weight") and p.dim() >= 2:
                p.normal_(0, 0.3)  # larger than default so layers differ visibly
    sd = {k: v.half() for k, v in model.state_dict().items()}
    torch.save({"dims": asdict(dims), "model_state_dict": sd}, path)
    return path


def beats_official_keys(cfg: Dict) -> Dict[str, tuple]:
    """Official BEATs state-dict keys and shapes for ``cfg`` (from the published model definition)."""
    e, d, f = cfg["embed_dim"], cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"]
    h, p, k = cfg["encoder_attention_heads"], cfg["input_patch_size"], cfg["conv_pos"]
    shapes = {"patch_embedding.weight": (e, 1, p, p), "layer_norm.weight": (e,), "layer_norm.bias": (e,)}
    if cfg["conv_bias"]:
        shapes["patch_embedding.bias"] = (e,)
    if e != d:
        shapes.update({"post_extract_proj.weight": (d, e), "post_extract_proj.bias": (d,)})
    shapes.update({
        "encoder.pos_conv.0.weight_g": (1, 1, k),
        "encoder.pos_conv.0.weight_v": (d, d // cfg["conv_pos_groups"], k),
        "encoder.pos_conv.0.bias": (d,),
        "encoder.layer_norm.weight": (d,),
        "encoder.layer_norm.bias": (d,),
    })
    for i in range(cfg["encoder_layers"]):
        pre = f"encoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[pre + f"self_attn.{proj}.weight"] = (d, d)
            shapes[pre + f"self_attn.{proj}.bias"] = (d,)
        if cfg["relative_position_embedding"]:
            shapes[pre + "self_attn.relative_attention_bias.weight"] = (cfg["num_buckets"], h)
        if cfg["gru_rel_pos"]:
            shapes[pre + "self_attn.grep_linear.weight"] = (8, d // h)
            shapes[pre + "self_attn.grep_linear.bias"] = (8,)
            shapes[pre + "self_attn.grep_a"] = (1, h, 1, 1)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[pre + f"{ln}.weight"] = (d,)
            shapes[pre + f"{ln}.bias"] = (d,)
        shapes[pre + "fc1.weight"] = (f, d)
        shapes[pre + "fc1.bias"] = (f,)
        shapes[pre + "fc2.weight"] = (d, f)
        shapes[pre + "fc2.bias"] = (d,)
    if cfg["finetuned_model"]:
        shapes["predictor.weight"] = (cfg["predictor_class"], d)
        shapes["predictor.bias"] = (cfg["predictor_class"],)
    return shapes


def write_tiny_beats(path: Path, cfg: Dict = None, seed: int = 0) -> Path:
    """An official-format BEATs checkpoint ``{"cfg", "model"}`` with random weights."""
    cfg = dict(BEATS_TINY_CFG if cfg is None else cfg)
    g = torch.Generator().manual_seed(seed)
    model: Dict[str, torch.Tensor] = {}
    for key, shape in beats_official_keys(cfg).items():
        if key.endswith("norm.weight") or key.endswith("grep_a") or key.endswith("weight_g"):
            model[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            model[key] = 0.2 * torch.randn(shape, generator=g)
    # Layer 0's relative bias table is shared by all layers, so every layer's copy holds the same values.
    for key in list(model):
        if key.endswith("self_attn.relative_attention_bias.weight"):
            model[key] = model["encoder.layers.0.self_attn.relative_attention_bias.weight"].clone()
    torch.save({"cfg": cfg, "model": model}, path)
    return path


def _tdnn_keys(prefix: str, cin: int, cout: int, kernel: int) -> Dict[str, tuple]:
    """SpeechBrain TDNNBlock: ``conv.conv`` + ``norm.norm`` (BatchNorm1d)."""
    return {
        f"{prefix}.conv.conv.weight": (cout, cin, kernel), f"{prefix}.conv.conv.bias": (cout,),
        f"{prefix}.norm.norm.weight": (cout,), f"{prefix}.norm.norm.bias": (cout,),
        f"{prefix}.norm.norm.running_mean": (cout,), f"{prefix}.norm.norm.running_var": (cout,),
        f"{prefix}.norm.norm.num_batches_tracked": (),
    }


def ecapa_official_keys(n_mels: int = 80, channels: List[int] = (32, 32, 32, 32, 96),
                        kernels: List[int] = (5, 3, 3, 3, 1), scale: int = 4, se: int = 8, attn: int = 16,
                        lin: int = 24) -> Dict[str, tuple]:
    """SpeechBrain ``embedding_model.ckpt`` keys and shapes of ECAPA_TDNN (global context pooling)."""
    shapes = _tdnn_keys("blocks.0", n_mels, channels[0], kernels[0])
    for i in range(1, len(channels) - 1):
        c_in, c = channels[i - 1], channels[i]
        shapes.update(_tdnn_keys(f"blocks.{i}.tdnn1", c_in, c, 1))
        for j in range(scale - 1):
            shapes.update(_tdnn_keys(f"blocks.{i}.res2net_block.blocks.{j}", c // scale, c // scale, kernels[i]))
        shapes.update(_tdnn_keys(f"blocks.{i}.tdnn2", c, c, 1))
        shapes.update({
            f"blocks.{i}.se_block.conv1.conv.weight": (se, c, 1), f"blocks.{i}.se_block.conv1.conv.bias": (se,),
            f"blocks.{i}.se_block.conv2.conv.weight": (c, se, 1), f"blocks.{i}.se_block.conv2.conv.bias": (c,),
        })
        if c_in != c:
            shapes.update({f"blocks.{i}.shortcut.conv.weight": (c, c_in, 1), f"blocks.{i}.shortcut.conv.bias": (c,)})
    shapes.update(_tdnn_keys("mfa", sum(channels[1:-1]), channels[-1], kernels[-1]))
    shapes.update(_tdnn_keys("asp.tdnn", channels[-1] * 3, attn, 1))
    shapes.update({"asp.conv.conv.weight": (channels[-1], attn, 1), "asp.conv.conv.bias": (channels[-1],)})
    c2 = channels[-1] * 2
    shapes.update({
        "asp_bn.norm.weight": (c2,), "asp_bn.norm.bias": (c2,), "asp_bn.norm.running_mean": (c2,),
        "asp_bn.norm.running_var": (c2,), "asp_bn.norm.num_batches_tracked": (),
        "fc.conv.weight": (lin, c2, 1), "fc.conv.bias": (lin,),
    })
    return shapes


def write_tiny_ecapa(path: Path, seed: int = 0, **kwargs) -> Path:
    """A SpeechBrain-layout ``embedding_model.ckpt`` (a plain state dict) with random weights."""
    g = torch.Generator().manual_seed(seed)
    sd: Dict[str, torch.Tensor] = {}
    for key, shape in ecapa_official_keys(**kwargs).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("norm.weight"):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.2 * torch.randn(shape, generator=g)
    torch.save(sd, path)
    return path


class TinyFbankEncoder(torch.nn.Module):
    """Frame-level model over fbank ``(B, T, 80)`` -> ``(B, (T-3)//2 + 1, 16)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(80, 24, kernel_size=3, stride=2)
        self.proj = torch.nn.Linear(24, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.tanh(self.conv(x.transpose(1, 2)).transpose(1, 2)))


class TinyWaveformPooler(torch.nn.Module):
    """Utterance-level model over waveform ``(B, N)`` and lengths ``(B,)`` -> ``(B, 12)``."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(160, 12)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        frames = wav[:, : (wav.shape[1] // 160) * 160].reshape(wav.shape[0], -1, 160)
        return torch.tanh(self.proj(frames)).sum(dim=1) / (lengths.float() / 160.0).unsqueeze(1)


def export_onnx(model: torch.nn.Module, example: tuple, path: Path, input_names: List[str],
                dynamic: Dict[str, Dict[int, str]]) -> Path:
    """Export with the TorchScript-based exporter (needs no onnxscript)."""
    torch.manual_seed(0)
    model.eval()
    torch.onnx.export(model, example, str(path), dynamo=False, input_names=input_names, output_names=["y"],
                      dynamic_axes=dynamic, opset_version=17)
    return path
