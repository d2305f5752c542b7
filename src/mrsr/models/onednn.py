"""Prepacked, fused oneDNN convolutions for CPU inference: what ``torch.compile``'s freezing does for
a convolution, without a compiler.

Eager ``nn.Conv2d`` on a CPU hands oneDNN plain (OIHW) weights, and oneDNN reorders them into its
blocked layout on every call; it also runs a following ReLU or addition as a separate pass over the
feature maps. Here the weights are reordered once per input shape and cached, and ReLU or the
addition of a second tensor run inside the convolution (oneDNN post-ops). Measured on the proposed
net (docs/benchmarks.md); used by its inference path when :func:`usable` says so.

The ops are ``torch.ops.mkldnn._convolution_pointwise`` and ``_reorder_convolution_weight``, the
ones Inductor emits for CPU convolutions; they are internal to PyTorch, so every use is guarded and
falls back to plain ``nn.Conv2d`` when they are missing.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

_OPS = getattr(torch.ops, "mkldnn", None)
# How many input shapes keep their packed weights (each shape: one copy of the conv weights).
CACHE_SHAPES = 4


def usable(x: torch.Tensor) -> bool:
    """Whether the fused path applies: float32 CPU inference (inference mode), oneDNN ops present."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_inference_mode_enabled()
            and torch.backends.mkldnn.is_available() and hasattr(_OPS, "_convolution_pointwise")
            and hasattr(_OPS, "_reorder_convolution_weight"))


class PackedConvs:
    """oneDNN-blocked copies of convolution weights, per input shape; rebuilt when a weight changes.

    Args:
        convs: the convolutions to serve (stride/padding/dilation/groups are read from each).
    """

    def __init__(self, convs: list[nn.Conv2d]) -> None:
        self.convs = convs
        self._cache: OrderedDict[tuple[int, ...], tuple[tuple, list[torch.Tensor]]] = OrderedDict()

    def weights(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Packed weights of every convolution for inputs of ``x``'s shape."""
        shape = tuple(x.shape)
        # A weight's version counter moves with every in-place update (optimiser step,
        # load_state_dict), its data pointer with every replacement: either invalidates the copy.
        state = tuple((c.weight._version, c.weight.data_ptr()) for c in self.convs)
        hit = self._cache.get(shape)
        if hit is None or hit[0] != state:
            packed = [_OPS._reorder_convolution_weight(c.weight, list(c.padding), list(c.stride), list(c.dilation),
                                                       c.groups, list(shape)) for c in self.convs]
            self._cache[shape] = hit = (state, packed)
            while len(self._cache) > CACHE_SHAPES:
                self._cache.popitem(last=False)
        self._cache.move_to_end(shape)
        return hit[1]


def conv(conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
    """``conv(x)``, then ReLU if asked, in one oneDNN call with the packed ``weight``."""
    return _OPS._convolution_pointwise(x, weight, conv.bias, list(conv.padding), list(conv.stride),
                                       list(conv.dilation), conv.groups, "relu" if relu else "none", [], "")


def conv_add(conv: nn.Conv2d, weight: torch.Tensor, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` in one oneDNN call with the packed ``weight``."""
    return _OPS._convolution_pointwise.binary(x, other, weight, conv.bias, list(conv.padding), list(conv.stride),
                                              list(conv.dilation), conv.groups, "add", 1.0, None, [], "")
