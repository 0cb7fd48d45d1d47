"""Pooled head: mean over tokens, optionally standardised, one linear layer (classes, values)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import register_head


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm without affine parameters over pooled features (B, D) (MAE's linear probe).

    Why: mean-pooled features of a pretrained text body share one large mean direction and
    vary little around it between inputs of another modality (ArrowHead: spread 0.25 around a
    mean of norm 2.6), so a linear layer on them is badly conditioned, and any common shift
    that fine-tuning causes moves every logit. Batch statistics remove that shift while the
    body trains; a training batch of one sample (a last partial batch) uses the running ones."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class TokenNorm(FeatureNorm):
    """FeatureNorm over every token of a batch: (B, S, D) standardised per feature, statistics
    over B*S tokens (the generate head's memory). A training batch of one sample uses the
    running statistics: its own would erase what sets it apart (its mean over tokens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (B*S, D)
        if self.training and x.shape[0] < 2:
            out = F.batch_norm(flat, self.running_mean, self.running_var, training=False, eps=self.eps)
        else:
            out = super().forward(flat)
        return out.view_as(x)


@register_head("pooled")
class PooledHead(nn.Module):
    """Mean over tokens, [FeatureNorm], then one linear layer: (B, S, D) -> (B, K)."""

    @classmethod
    def build(cls, body, grid: tuple[int, ...], spec) -> "PooledHead":
        return cls(body.out_dim, spec.n_outputs, norm=getattr(spec, "head_norm", "none") == "batch")

    def __init__(self, dim: int, n_outputs: int, norm: bool = False) -> None:
        super().__init__()
        self.norm = FeatureNorm(dim) if norm else None
        self.fc = nn.Linear(dim, n_outputs)

    def probe_features(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """What the head standardises and reads: (B, S, D) -> (B, D) (``engine/probe.py``)."""
        return hidden.mean(dim=1)

    def warm_start(self, coef: torch.Tensor, intercept: torch.Tensor, mean: torch.Tensor,
                   std: torch.Tensor) -> None:
        """Start from a probe fitted on standardised features (f - mean) / std: coef (K, D),
        intercept (K,). With a FeatureNorm the statistics become its running ones; without,
        the standardisation is folded into the linear layer."""
        with torch.no_grad():
            if self.norm is not None:
                self.norm.running_mean.copy_(mean)
                self.norm.running_var.copy_(std ** 2 - self.norm.eps)
                weight, bias = coef, intercept
            else:
                weight = coef / std
                bias = intercept - weight @ mean
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)

    def forward(self, hidden: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        pooled = self.probe_features(hidden, grid)  # (B, D)
        return self.fc(pooled if self.norm is None else self.norm(pooled))
