"""S = V Vᵀ and each token's top-k neighbours in one Triton kernel: no (B, H, T, T) tensor.

The reference path (`kernels.similarity` then `kernels.topk_neighbours`) writes a layer's whole S,
B·H·T² floats, to device memory and reads it back two or three times for the top-k. Here one program
takes BLOCK_M query rows of one (window, head): their S row block is a single `tl.dot` against all
of the head's keys (the whole padded window fits one tile: T <= MAX_TOKENS), padding keys and the
token itself are set to -inf, and k rounds of max / argmax / mask leave the neighbours, which are
all that is written. S stays in registers.

Contract: `fused_similarity_topk(v, valid, k, kind)` returns what `topk_neighbours(similarity(v,
kind, key_bias(valid, -inf)), valid, k, already_masked=True)` returns: index (B, H, T, k) int64 with
-1 where there is no neighbour, value float32 with NaN there, descending; among exactly equal values
the lower index first. The dot accumulates in float32 (`input_precision="ieee"`: no TF32) but in its
own order, so values may differ from the reference's GEMM in the last bits and a neighbour may swap
with another whose S is within that rounding of the k-th (agreement.py's near-tie rule). Rows with
NaN in S (a model that overflowed) are not ranked as torch.topk ranks them; the reference path is
the one to compare such runs with.

Used on CUDA only, behind `fused_topk_works` (a probe against the reference at the run's largest
window and head size, once a process): Triton compiles no CPU kernel, and the CPU's reference path
keeps its stored bytes.
Without a GPU the kernel runs in Triton's interpreter (numpy) when TRITON_INTERPRET=1 is set before
Triton is imported (tests/conftest.py does so on a machine without CUDA), which is how
tests/unit/test_fused_topk.py checks it against the reference.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

from attnsim.model.kernels import key_bias, similarity, topk_neighbours
from attnsim.model.similarity import as_kind

log = logging.getLogger("attnsim")

# One tile holds a query block's whole S row block: windows up to this many tokens (BERT's 512 with room).
MAX_TOKENS = 1024

try:  # Triton ships with CUDA builds of torch; CPU builds have none (the reference path is used)
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None


def triton_available(device: torch.device) -> bool:
    """Whether Triton can run the kernel for tensors on `device`: compiled on CUDA, interpreted on a CPU."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:

    @triton.jit
    def _similarity_topk(
        v_ptr,  # (B * H, T, D) float32, contiguous
        bias_ptr,  # (B, T) float32: 0 on valid keys, -inf on padding
        value_ptr,  # (B * H, T, K) float32 out
        index_ptr,  # (B * H, T, K) int64 out
        T,
        D,
        n_heads,
        K: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        pair = tl.program_id(0)  # (window, head)
        rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # query tokens i
        cols = tl.arange(0, BLOCK_N)  # key tokens j
        dims = tl.arange(0, BLOCK_D)
        base = v_ptr + pair * T * D
        q = tl.load(base + rows[:, None] * D + dims[None, :], mask=(rows[:, None] < T) & (dims[None, :] < D), other=0.0)
        kt = tl.load(base + cols[None, :] * D + dims[:, None], mask=(cols[None, :] < T) & (dims[:, None] < D), other=0.0)
        s = tl.dot(q, kt, input_precision="ieee")  # (BLOCK_M, BLOCK_N) float32
        bias = tl.load(bias_ptr + (pair // n_heads) * T + cols, mask=cols < T, other=float("-inf"))
        s = s + bias[None, :]  # padding keys and columns past T: -inf
        s = tl.where(rows[:, None] == cols[None, :], float("-inf"), s)  # never its own neighbour
        out = (pair * T + rows) * K
        for slot in tl.static_range(K):
            best = tl.max(s, axis=1)
            at = tl.argmax(s, axis=1, tie_break_left=True)
            tl.store(value_ptr + out + slot, best, mask=rows < T)
            tl.store(index_ptr + out + slot, at.to(tl.int64), mask=rows < T)
            s = tl.where(cols[None, :] == at[:, None], float("-inf"), s)


def _blocks(t: int, d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D): a query block's rows, the padded key width, the padded head size
    (tl.dot wants 16 or more); fewer rows per program for long windows keep the S block in registers."""
    n = max(16, triton.next_power_of_2(t))
    return (32 if n <= 256 else 16), n, max(16, triton.next_power_of_2(d))


def fused_similarity_topk(v: torch.Tensor, valid: torch.Tensor, k: int, kind: str = "dot") -> tuple[torch.Tensor, torch.Tensor]:
    """v: (B, H, T, d) any float dtype; valid: (B, T) bool. (index, value) as `topk_neighbours` gives them."""
    b, h, t, d = v.shape
    if t > MAX_TOKENS:
        raise ValueError(f"fused top-k takes windows of at most {MAX_TOKENS} tokens, not {t}")
    u = as_kind(v.float(), kind).contiguous()  # accumulate in float32 whatever the model's dtype
    kk = min(k, t)
    value = torch.empty(b, h, t, kk, dtype=torch.float32, device=v.device)
    index = torch.empty(b, h, t, kk, dtype=torch.int64, device=v.device)
    block_m, block_n, block_d = _blocks(t, d)
    grid = (b * h, triton.cdiv(t, block_m))
    bias = key_bias(valid, float("-inf")).contiguous()
    _similarity_topk[grid](u, bias, value, index, t, d, h, K=kk, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    missing = torch.isinf(value) | ~valid[:, None, :, None]
    index = index.masked_fill_(missing, -1)
    value = value.masked_fill_(missing, float("nan"))
    if kk < k:  # windows shorter than k + 1 tokens: pad the k axis, as topk_neighbours does
        index = torch.nn.functional.pad(index, (0, k - kk), value=-1)
        value = torch.nn.functional.pad(value, (0, k - kk), value=float("nan"))
    return index, value


def reference_similarity_topk(v: torch.Tensor, valid: torch.Tensor, k: int, kind: str = "dot") -> tuple[torch.Tensor, torch.Tensor]:
    """The same from the whole S: `similarity` with -inf on padding keys, then `topk_neighbours`."""
    s = similarity(v, kind, key_bias(valid, float("-inf")))
    return topk_neighbours(s, valid, k, already_masked=True)


@functools.cache
def fused_topk_works(device: torch.device, max_tokens: int = 300, head_size: int = 32) -> bool:
    """The kernel compiles and runs on `device` for windows up to `max_tokens` tokens of heads of
    `head_size` (the largest tile a run will ask for: shorter windows take smaller ones), and agrees
    with the reference there and on a short window, both kinds: values within 1e-5 relative at every
    rank, and the same neighbours but for swaps of near-equal values (at most 1 slot in 1,000).
    Once a process per shape; any failure means the reference path, with a warning."""
    if not triton_available(device):
        return False
    if max_tokens > MAX_TOKENS:
        log.warning("fused top-k takes windows of at most %d tokens, this model %d; using the reference", MAX_TOKENS, max_tokens)
        return False
    g = torch.Generator().manual_seed(0)
    try:
        for t in sorted({min(45, max_tokens), max_tokens}):
            v = torch.randn(3, 2, t, head_size, generator=g).to(device)
            valid = (torch.arange(t)[None] < torch.tensor([[t], [max(1, t * 2 // 3)], [min(t, 5)]])).to(device)
            for kind in ("dot", "cosine"):
                index, value = fused_similarity_topk(v, valid, 8, kind)
                ref_index, ref_value = reference_similarity_topk(v, valid, 8, kind)
                # values agree rank by rank, so a differing index is a swap of near-equal values (rare)
                swapped = (index != ref_index).float().mean().item()
                if swapped > 1e-3 or not torch.allclose(value, ref_value, rtol=1e-5, atol=1e-6, equal_nan=True):
                    log.warning("fused top-k disagrees with the reference on %s (T = %d, %s); using the reference", device, t, kind)
                    return False
    except Exception as e:  # noqa: BLE001 - any compile or launch failure (e.g. the tile needs more shared memory than the GPU has)
        log.warning("fused top-k unavailable on %s (%s: %s); using the reference", device, type(e).__name__, e)
        return False
    return True
