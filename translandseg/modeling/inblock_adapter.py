"""The in-block adapter: a bottleneck MLP with a skip connection after each encoder attention.

Besides the three published ATL modules, the paper's public code deploys an adapter inside each
encoder block (its ``image_encoder2.py``): the attention's output ``y`` becomes
``y + up(GELU(down(y)))`` before the block adds it to its input, ``down`` narrowing the width
by ``ratio``. Here it is attached to a frozen encoder without touching its code or weight names:
a forward hook on every block's ``attn`` module (SAM's ViT blocks; TinyViT's attention blocks,
stages 1-3 of LiteMedSAM; its stage-0 MBConv blocks have no attention and get no adapter). The
hooks act only inside ``encode`` and only on the thread running it, so the plain encoder (point
prompts, encoded in the background) is never adapted.
"""

import threading
from contextlib import contextmanager
from typing import Iterator, List

import torch
from torch import nn

from .atl import ATLVariant, init_atl_weights

_ENCODING = threading.local()  # .owner: the InBlockAdapters encoding on this thread, if any


class BottleneckAdapter(nn.Module):
    """``y + up(GELU(down(y)))`` on the last dimension, ``width -> hidden -> width``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(width, hidden)
        self.up = nn.Linear(hidden, width)
        self.act = nn.GELU()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.up(self.act(self.down(y)))


def attention_modules(encoder: nn.Module) -> List[nn.Module]:
    """The ``attn`` module of every block of a SAM ViT or TinyViT encoder, first to last."""
    blocks = encoder.blocks if hasattr(encoder, "blocks") else [b for layer in encoder.layers for b in layer.blocks]
    return [block.attn for block in blocks if hasattr(block, "attn")]


class InBlockAdapters(nn.Module):
    def __init__(self, encoder: nn.Module, variant: ATLVariant, ratio: float = 0.25) -> None:
        """
        Args:
            encoder: the frozen encoder whose attention outputs are adapted (hooks are attached).
            variant: the ATL variant this deployment is registered as (``inblock``).
            ratio: the bottleneck's width over the block's width (0.25, as the paper's code).
        """
        super().__init__()
        self.variant = variant
        attentions = attention_modules(encoder)
        if not attentions:
            raise ValueError("the encoder has no attention blocks to deploy in-block adapters in")
        widths = [attention.proj.out_features for attention in attentions]
        self.adapters = nn.ModuleList(BottleneckAdapter(w, max(1, round(w * ratio))) for w in widths)
        for attention, adapter in zip(attentions, self.adapters, strict=True):
            attention.register_forward_hook(self._hook(adapter))
        self.apply(init_atl_weights)

    def _hook(self, adapter: BottleneckAdapter):
        def adapt(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            return adapter(output) if getattr(_ENCODING, "owner", None) is self else output

        return adapt

    @contextmanager
    def _adapting(self) -> Iterator[None]:
        _ENCODING.owner = self
        try:
            yield
        finally:
            _ENCODING.owner = None

    def encode(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``encoder`` run on normalised images ``x`` with every attention output adapted."""
        with self._adapting():
            return encoder(x)
