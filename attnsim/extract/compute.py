"""One unit's tier arrays from its windows with a loaded model: head vectors -> S, top-k, attention mass.

No store, no threads: `extract.stage.Extractor` reads a unit's tokens, calls `UnitComputer.compute`
and writes what it returns; the report and `attnsim inspect` call it on one window. Windows are
batched by padded length (less padding) while results keep the given window order; each layer's S
and top-k are computed as the layer finishes (in the hook), so all layers' T x T matrices never
coexist, and on a GPU nothing leaves the device until the batch's last layer is queued.

Which kernels compute S's top-k and the attention mass is decided per device (`topk_kernel`,
`mass_kernel`): the fused ones on CUDA where their probes pass, the T x T reference elsewhere.

Example::

    computer = UnitComputer(loaded, kind="dot", k=8, tiers=("default",), token_classes=classes, batch_size=8)
    arrays = computer.compute(input_ids, sentence_id, length)   # {"topk_index": (W, L, H, T, k), ...}
"""

from __future__ import annotations

import numpy as np
import torch

from attnsim.model.fused_mass import fused_attention_mass, fused_works
from attnsim.model.fused_topk import fused_similarity_topk, fused_topk_works, reference_similarity_topk
from attnsim.model.kernels import attention_mass, attention_scores, key_bias, sentences_per_window, similarity, split_heads
from attnsim.model.loading import LoadedModel
from attnsim.model.taps import head_taps

# Windows are padded to a multiple of this many tokens (or the store's width): few distinct shapes,
# little padding (lee/minilm: 92 % of padded tokens are real at 32, against 68 % for the full width).
PAD_MULTIPLE = 32


def padded_length(length: np.ndarray, width: int) -> np.ndarray:
    """The length each window is computed at: its own length rounded up to PAD_MULTIPLE, at most width."""
    return np.minimum(-(-np.asarray(length) // PAD_MULTIPLE) * PAD_MULTIPLE, width)


class UnitComputer:
    """Computes the tier arrays for a set of windows with one loaded model (no store access)."""

    def __init__(self, loaded: LoadedModel, *, kind: str, k: int, tiers, token_classes: dict, batch_size: int):
        self.loaded = loaded
        self.kind, self.k, self.tiers, self.batch_size = kind, k, tuple(tiers), batch_size
        self.device = next(loaded.model.parameters()).device
        vocab = max(len(loaded.tokenizer), max(token_classes["punct"], default=0) + 1)
        punct = torch.zeros(vocab, dtype=torch.bool)
        punct[token_classes["punct"]] = True
        self.punct_table = punct.to(self.device)
        self.cls, self.sep = token_classes["cls"], token_classes["sep"]
        self.pad = loaded.tokenizer.pad_token_id or 0
        self.mass_kernel = mass_kernel(self.device)
        self.topk_kernel = topk_kernel(self.device, loaded.max_tokens, loaded.head_size)

    def batches(self, input_ids: np.ndarray, length: np.ndarray):
        """(rows, ids (B, Tb) on the device, valid (B, Tb)) per batch; rows keep the store order.

        A window is always padded to the same length, `padded_length(its length)`, whichever windows
        share its batch: the model's kernels then see the same shapes for it at every batch size
        (torch's CPU GEMMs and reductions give the same bits per row for any batch, measured; they
        do not for another padded length). Windows of one padded length are batched together.
        """
        padded = padded_length(length, input_ids.shape[1])
        for tb in np.unique(padded)[::-1]:  # longest first
            same = np.flatnonzero(padded == tb)  # ascending window order
            for b in range(0, len(same), self.batch_size):
                rows = same[b : b + self.batch_size]
                ids = torch.from_numpy(input_ids[rows, :tb].astype(np.int64))
                valid = ids >= 0  # (B, Tb)
                ids = ids.masked_fill(~valid, self.pad)
                if self.device.type == "cuda":
                    ids, valid = ids.pin_memory(), valid.pin_memory()
                yield rows, ids.to(self.device, non_blocking=True), valid.to(self.device, non_blocking=True)

    def _empty(self, w: int, t: int) -> dict[str, np.ndarray]:
        """The unit's tier arrays, filled with their padding values (-1, NaN)."""
        l, h, d = self.loaded.n_layers, self.loaded.n_heads, self.loaded.head_size
        out: dict[str, np.ndarray] = {}
        if "default" in self.tiers:
            out["topk_index"] = np.full((w, l, h, t, self.k), -1, np.int16)
            out["topk_value"] = np.full((w, l, h, t, self.k), np.nan, np.float16)
            out["attention_mass"] = np.full((w, l, h, 8), np.nan, np.float32)
        if "vectors" in self.tiers:
            out["head_vectors"] = np.full((w, l, h, t, d), np.nan, np.float16)
        if "dense" in self.tiers:
            out["similarity"] = np.full((w, l, h, t, t), np.nan, np.float16)
        return out

    @torch.inference_mode()
    def compute(self, input_ids: np.ndarray, sentence_id: np.ndarray, length: np.ndarray) -> dict[str, np.ndarray]:
        """input_ids, sentence_id: (W, T) with -1 padding; length: (W,). Returns the tier arrays.

        A batch's results are copied to the host while the next batch computes: its copies are queued
        behind its kernels (pinned buffers on a GPU), and stored only after the next batch is queued,
        so the GPU is not left idle while the host waits and scatters (on a CPU the same steps run in
        turn). The values do not depend on this order."""
        out = self._empty(*input_ids.shape)
        # One sentence count for the whole unit, not per batch: it is the width of attention_mass's
        # key-category matmul, whose rounding depends on that width.
        n_sentences = sentences_per_window(sentence_id)
        landing = None  # the previous batch, its copies to the host in flight
        for rows, ids, valid in self.batches(input_ids, length):
            copies = HostCopies(rows, self._run_batch(ids, valid, sentence_id[rows, : ids.shape[1]], n_sentences))
            if landing is not None:
                landing.store(out)
            landing = copies
        if landing is not None:
            landing.store(out)
        return out

    def _run_batch(self, ids: torch.Tensor, valid: torch.Tensor, sentence_id: np.ndarray, n_sentences: int) -> list:
        """Queue one batch's forward and every layer's tier kernels; returns (name, layer, device tensor)."""
        ctx = {
            "n_sentences": n_sentences,
            "valid": valid,
            "cls": ids.eq(self.cls) & valid,
            "sep": ids.eq(self.sep) & valid,
            "punct": self.punct_table[ids] & valid,
            "sent": torch.from_numpy(sentence_id.astype(np.int64)).to(self.device),
            "nan_keys": key_bias(valid, float("nan")),
        }
        results: list = []  # (array name, layer, device tensor (B, H, Tb, ...))

        def on_layer(taps):
            self._layer(results, taps.layer, ctx, taps.q, taps.k, taps.z)

        # queries and keys only for the attention mass (default tier)
        with head_taps(self.loaded, on_layer, points=("q", "k", "z") if "default" in self.tiers else ("z",)):
            self.loaded.model(input_ids=ids, attention_mask=valid.long())
        return results

    def _layer(self, results, layer, ctx, q, key, z) -> None:
        """One layer's tier tensors, left on the device; copied to the host once per batch."""
        h = self.loaded.n_heads
        valid = ctx["valid"]
        v = split_heads(z, h)  # (B, H, Tb, d)
        if "vectors" in self.tiers:
            vec = v.float().masked_fill(~valid[:, None, :, None], float("nan"))
            results.append(("head_vectors", layer, vec.to(torch.float16)))
        if "dense" in self.tiers:
            s = similarity(v, self.kind, ctx["nan_keys"])  # (B, H, Tb, Tb), NaN on padding keys
            s.masked_fill_(~valid[:, None, :, None], float("nan"))  # and on padding queries
            results.append(("similarity", layer, s.to(torch.float16)))
        if "default" in self.tiers:
            # (B, H, Tb, k): one fused kernel, or the whole S (-inf on padding keys) and its top-k
            similarity_topk = fused_similarity_topk if self.topk_kernel == "fused" else reference_similarity_topk
            index, value = similarity_topk(v, valid, self.k, self.kind)
            results.append(("topk_index", layer, index.to(torch.int16)))
            results.append(("topk_value", layer, value.to(torch.float16)))
            qh, kh, categories = split_heads(q, h), split_heads(key, h), (ctx["cls"], ctx["sep"], ctx["punct"], ctx["sent"], ctx["n_sentences"])
            if self.mass_kernel == "fused":  # one fused attention call, no T x T tensor
                mass = fused_attention_mass(qh, kh, valid, *categories)  # (B, H, C)
            else:
                mass = attention_mass(attention_scores(qh, kh, valid), valid, *categories)
            results.append(("attention_mass", layer, mass))


def mass_kernel(device: torch.device) -> str:
    """Which attention-mass path a device gets: "fused" (`fused_mass`: one fused attention call, no
    T x T tensor) on CUDA where its probe passes, else "reference" (`kernels.attention_mass` on
    recomputed scores). The CPU keeps the reference: the fused path measured no faster there
    (benchmarks/RESULTS.md, 2026-12-03), and the CPU's stored bytes stay as they were. Both agree
    within agreement.py's tolerances (tests/unit/test_fused_mass.py)."""
    return "fused" if device.type == "cuda" and fused_works(device) else "reference"


def topk_kernel(device: torch.device, max_tokens: int = 512, head_size: int = 64) -> str:
    """Which S + top-k path a device gets: "fused" (`fused_topk`: one Triton kernel, S never leaves
    registers) on CUDA where Triton is installed and its probe passes at the model's largest window
    and head size, else "reference" (the whole S, then `kernels.topk_neighbours`). Triton compiles
    no CPU kernel, so the CPU's bytes are unchanged."""
    return "fused" if device.type == "cuda" and fused_topk_works(device, max_tokens, head_size) else "reference"


class HostCopies:
    """A batch's result tensors on their way to the host. On a GPU each is copied into pinned memory
    without waiting (queued behind the batch's kernels) and an event marks the end of the copies;
    `store` waits for that event only. On a CPU the tensors are already the host's."""

    def __init__(self, rows: np.ndarray, results: list):
        self.rows, self.results, self.done = rows, results, None
        if results and results[0][2].is_cuda:
            self.results = [(name, layer, torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x, non_blocking=True)) for name, layer, x in results]
            self.done = torch.cuda.Event()
            self.done.record()

    def store(self, out: dict[str, np.ndarray]) -> None:
        """Scatter into the unit's arrays at the batch's rows (its windows, in store order)."""
        if self.done is not None:
            self.done.synchronize()
        rows = self.rows
        for name, layer, tensor in self.results:
            host = tensor.numpy()
            if name == "attention_mass":  # (B, H, C)
                out[name][rows, layer] = host
                continue
            tb = host.shape[2]  # the batch's padded length
            if name == "similarity":
                out[name][rows, layer, :, :tb, :tb] = host
            else:
                out[name][rows, layer, :, :tb] = host
