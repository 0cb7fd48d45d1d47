"""GPT-2 (the FPT paper's body): a decoder-only transformer with causal attention.

Our tokens go in as ``inputs_embeds``; GPT-2 adds its learned positions. Token i attends only
to tokens up to i, so the linear head's mean pool still sees the whole input but a dense head
would not (refused: ``causal``). With ``--head generate`` the body is its own decoder: a prefix
language model that reads the input's tokens, then writes the label with its tied LM head and
tokenizer under the label trie (``models/decoders.py``, ``PrefixDecoder``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_body
from .hf import HFBody


@register_body
class GPT2Body(HFBody):
    family = "gpt2"
    model_types = ("gpt2",)
    causal = True
    lora_fan_in_fan_out = True  # its Conv1D projections keep (in, out) weights

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        cfg = model.config
        self.embed_dim = self.out_dim = int(cfg.n_embd)
        self.max_tokens = int(cfg.n_positions)

    def encode(self, tokens: torch.Tensor, grid: tuple[int, ...]):
        """tokens (B, S, D) -> hidden (B, S, D) after the final LayerNorm, causal."""
        return self.model(inputs_embeds=tokens).last_hidden_state, grid

    @torch.no_grad()
    def input_token_norm(self) -> float:
        return float(self.model.get_input_embeddings().weight.norm(dim=1).mean())

    def blocks(self) -> list[nn.Module]:
        return list(self.model.h)

    def final_norm_prefixes(self) -> tuple[str, ...]:
        return ("model.ln_f.",)

    def bypassed_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The word embeddings: our embedder replaces them as input; as the generate head's
        tied output layer and answer embeddings they stay frozen (the pretrained vocabulary)."""
        ids = {id(p) for p in self.model.get_input_embeddings().parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    def lora_targets(self) -> list[str]:
        """GPT-2's projections are transformers ``Conv1D`` layers (peft adapts them too)."""
        names = {id(m): n for n, m in self.named_modules()}
        return [names[id(m)] for block in self.blocks() for m in block.modules()
                if type(m).__name__ == "Conv1D"]

    def answer_decoder(self, pretrained: bool) -> nn.Module:
        from ..decoders import PrefixDecoder

        return PrefixDecoder(self)
