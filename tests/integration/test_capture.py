"""Captured head outputs equal softmax(QK^T/sqrt(d) + mask) V computed from each layer's own weights."""

from __future__ import annotations

import pytest
import torch

from attnsim.model.loading import ADAPTERS, LoadedModel
from attnsim.model.taps import get_module, head_taps


def tiny(model_type: str):
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    common = dict(vocab_size=99, max_position_embeddings=64)
    if model_type == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, **common))
    elif model_type == "roberta":
        model = RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, pad_token_id=1, **common))
    else:
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, **common))
    model.eval()
    n_layers = len(get_module(model, ADAPTERS[model_type].layers))
    return LoadedModel(model, None, ADAPTERS[model_type], model_type, "random", model_type, n_layers, 4, 8, 64, "")


def reference_heads(model_type, layer, hidden, mask):
    """softmax(Q K^T / sqrt(d) + mask) V per head, merged back to (B, T, H*d)."""
    if model_type == "distilbert":
        att = layer.attention
        q, k, v = att.q_lin(hidden), att.k_lin(hidden), att.v_lin(hidden)
    else:
        att = layer.attention.self
        q, k, v = att.query(hidden), att.key(hidden), att.value(hidden)
    b, t, hd = q.shape
    split = lambda x: x.view(b, t, 4, hd // 4).transpose(1, 2)  # noqa: E731 - (B, H, T, d)
    scores = split(q) @ split(k).transpose(-1, -2) / (hd // 4) ** 0.5
    scores = scores + (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    z = torch.softmax(scores, dim=-1) @ split(v)  # (B, H, T, d)
    return z.transpose(1, 2).reshape(b, t, hd)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert"])
def test_captured_vectors_match_independent_computation(model_type):
    loaded = tiny(model_type)
    ids = torch.randint(5, 99, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0  # padding in the batch
    mask[2, 5:] = 0
    captured = {}
    with torch.inference_mode(), head_taps(loaded, lambda taps: captured.__setitem__(taps.layer, (taps.q, taps.k, taps.z))):
        out = loaded.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    layers = get_module(loaded.model, loaded.adapter.layers)
    assert sorted(captured) == list(range(len(layers)))
    for l, layer in enumerate(layers):
        with torch.inference_mode():
            expected = reference_heads(model_type, layer, out.hidden_states[l], mask)
        got = captured[l][2]
        real = mask.bool()
        assert torch.allclose(got[real], expected[real], atol=1e-5, rtol=0), f"layer {l}: max diff {(got[real] - expected[real]).abs().max()}"


def test_hooks_are_removed_even_on_error():
    loaded = tiny("bert")

    def boom(*args):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        with head_taps(loaded, boom):
            loaded.model(input_ids=torch.randint(5, 99, (1, 4)))
    for module in loaded.model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_taps_are_named_and_only_the_points_asked_for_are_hooked():
    loaded = tiny("bert")
    seen = []

    def on_layer(taps):
        seen.append((taps.name("z"), taps.q is None, taps.k is None, tuple(taps.z.shape)))
        hooks = sum(len(m._forward_hooks) for m in loaded.model.modules())
        assert hooks == 0, "no query/key hooks when only z is asked for"

    ids = torch.randint(5, 99, (2, 6))
    with torch.inference_mode(), head_taps(loaded, on_layer, points=("z",), layers={1}):
        loaded.model(input_ids=ids)
    hidden = loaded.model.config.hidden_size
    assert seen == [("layers.1.attn.z", True, True, (2, 6, hidden))]
    with pytest.raises(ValueError, match="unknown tap points"):
        with head_taps(loaded, on_layer, points=("v",)):
            pass
