"""Named taps on each layer's attention: queries, keys and the heads' output vectors, by hook point.

Hook points are named as TransformerLens names its own (`blocks.3.attn.hook_z`): here
``layers.{i}.attn.q``, ``.k`` and ``.z``, each (B, T, H*d). z is the input of the head-output
projection: the attention-weighted sums of value vectors of all heads, concatenated, before W_O.
Only the points asked for are hooked; the hooks are removed on exit whatever happens, and the
model keeps its fast attention path (SDPA never returns attention probabilities).

Example::

    with head_taps(loaded, lambda taps: print(taps.name("z"), taps.z.shape), points=("z",)):
        loaded.model(input_ids=ids, attention_mask=mask)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import torch

if TYPE_CHECKING:
    from attnsim.model.loading import LoadedModel

TAP_POINTS = ("q", "k", "z")


@dataclass(frozen=True)
class LayerTaps:
    """One layer's captured activations; a point not asked for is None. Each is (B, T, H*d)."""

    layer: int
    z: torch.Tensor  # the heads' outputs, concatenated, before W_O
    q: torch.Tensor | None = None  # queries (the output of the layer's query projection)
    k: torch.Tensor | None = None  # keys

    def name(self, point: str) -> str:
        """The hook point's stable name, e.g. "layers.3.attn.z"."""
        return f"layers.{self.layer}.attn.{point}"


OnLayer = Callable[[LayerTaps], None]


@contextlib.contextmanager
def head_taps(loaded: LoadedModel, on_layer: OnLayer, points=TAP_POINTS, layers=None) -> Iterator[None]:
    """Call ``on_layer(taps)`` as each layer's heads finish (of `layers`, default all) with the
    `points` asked for; z is always among them: it is taken when the layer's heads are done."""
    unknown = set(points) - set(TAP_POINTS)
    if unknown:
        raise ValueError(f"unknown tap points {sorted(unknown)}; choose among {TAP_POINTS}")
    adapter, handles = loaded.adapter, []
    blocks = get_module(loaded.model, adapter.layers)
    try:
        for index, block in enumerate(blocks):
            if layers is not None and index not in layers:
                continue
            captured: dict[str, torch.Tensor] = {}

            def keep(point, store=captured):
                def hook(module, args, output):
                    store[point] = output

                return hook

            def finish(module, args, store=captured, index=index):
                on_layer(LayerTaps(index, z=args[0], q=store.pop("q", None), k=store.pop("k", None)))

            for point, path in (("q", adapter.query), ("k", adapter.key)):
                if point in points:
                    handles.append(get_module(block, path).register_forward_hook(keep(point)))
            handles.append(get_module(block, adapter.head_input).register_forward_pre_hook(finish))
        yield
    finally:
        for handle in handles:
            handle.remove()


def get_module(obj, dotted: str):
    """The submodule at a dotted path; numbers index into lists ("encoder.layer.3.attention")."""
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj
