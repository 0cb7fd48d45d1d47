"""Pooled head: mean over tokens, optionally standardised, one linear layer (classes, values)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import register_head


def _world() -> int:
    """Processes in the default process group; 1 without one (a plain run)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(SUM) with autograd: the gradient of a sum over processes, for each process's
    term, is the sum of every process's gradient (an all-reduce too). Why not torch's:
    ``torch.distributed.nn.functional.all_reduce`` is deprecated in torch 2.13 and its
    replacement, the functional collectives, wraps the result in an AsyncCollectiveTensor whose
    every later op dispatches through Python: measured 11.8 ms against 5.6 ms for one
    FeatureNorm forward + backward (2 gloo processes, D=384, under load)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def global_moments(flat: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Collective: (mean (D,), biased variance (D,), rows, samples) of every process's rows
    ``flat`` (N_r, D), with gradients to each process's rows (what ``nn.SyncBatchNorm`` does;
    it refuses CPU tensors in torch 2.13, so it cannot run under gloo).

    Why one all-reduce of a (world, 2 + 2D) table: each process fills its own row with its
    row count, sample count, sum and centred sum of squares, and the counts weight the
    combination (Chan et al.), so uneven batches combine exactly and the variance needs no
    E[x^2] - E[x]^2 (float32 cancellation when the mean is large against the spread). The
    all-reduce's backward sends each row's gradient back to the process that owns it."""
    import torch.distributed as dist

    x = flat.float()  # (N_r, D)
    n, dim = x.shape
    mean = x.mean(0) if n else x.new_zeros(dim)  # (D,)
    own = torch.cat([x.new_tensor([n, samples]), mean * n, ((x - mean) ** 2).sum(0)])  # (2 + 2D,)
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = [own if r == rank else torch.zeros_like(own) for r in range(world)]
    table = _SumOverProcesses.apply(torch.stack(rows))  # (world, 2 + 2D): every process's row
    counts = table[:, 0]  # (world,)
    total, total_samples = (int(v) for v in table[:, :2].sum(0).tolist())
    mean = table[:, 2:2 + dim].sum(0) / max(total, 1)  # (D,)
    means = table[:, 2:2 + dim] / counts.clamp(min=1)[:, None]  # (world, D)
    m2 = table[:, 2 + dim:].sum(0) + (counts[:, None] * (means - mean) ** 2).sum(0)  # (D,)
    return mean, m2 / max(total, 1), total, total_samples


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm without affine parameters over pooled features (B, D) (MAE's linear probe).

    Why: mean-pooled features of a pretrained text body share one large mean direction and
    vary little around it between inputs of another modality (ArrowHead: spread 0.25 around a
    mean of norm 2.6), so a linear layer on them is badly conditioned, and any common shift
    that fine-tuning causes moves every logit. Batch statistics remove that shift while the
    body trains; a training batch of one sample (a last partial batch) uses the running ones.

    Several processes training (DDP, FSDP): the statistics are those of the global batch
    (every process's samples, :func:`global_moments`), so N processes x B samples train like
    one process x N*B, and the running statistics, updated from the global moments, stay
    equal on every process; "one sample" then means one in the global batch."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._standardise(x, x.shape[0])

    def _standardise(self, flat: torch.Tensor, samples: int) -> torch.Tensor:
        """``flat`` (N, D) standardised per feature; ``samples``: how many inputs its rows
        come from (the 1-sample rule counts inputs, not tokens)."""
        if self.training and _world() > 1:
            return self._global(flat, samples)
        if self.training and samples < 2:
            return self._running(flat)
        return super().forward(flat)

    def _running(self, flat: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(flat, self.running_mean, self.running_var, training=False, eps=self.eps)

    def _global(self, flat: torch.Tensor, samples: int) -> torch.Tensor:
        """Training under several processes: the global batch's statistics (a collective:
        every process calls it on every training forward pass)."""
        mean, var, rows, total = global_moments(flat, samples)
        if total < 2:
            return self._running(flat)
        if self.track_running_stats:
            with torch.no_grad():  # BatchNorm's update, from the global moments
                self.num_batches_tracked.add_(1)
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(mean, alpha=f)
                self.running_var.mul_(1 - f).add_(var * (rows / max(rows - 1, 1)), alpha=f)
        out = (flat.float() - mean) * torch.rsqrt(var + self.eps)  # (N, D)
        return out.to(flat.dtype)


class TokenNorm(FeatureNorm):
    """FeatureNorm over every token of a batch: (B, S, D) standardised per feature, statistics
    over B*S tokens (the generate head's memory). A training batch of one sample uses the
    running statistics: its own would erase what sets it apart (its mean over tokens)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])  # (B*S, D)
        return self._standardise(flat, x.shape[0]).view_as(x)


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
