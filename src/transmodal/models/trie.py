"""A prefix trie over tokenised label strings: which tokens may come next (OFA's ``utils/trie.py``).

Every label is a token sequence closed by the end token, so a label that is a prefix of another
("gun" / "gun point") is told apart by the end token, and labels that share a prefix share a
path. The generate head (``heads/generate.py``) uses the trie three ways, all on *teacher-forced*
label sequences (each label's tokens fed after the start token):

* masks: at step ``t`` of label ``k`` only the children of the prefix ``labels[k][:t]`` are
  allowed (the training loss and the ``score`` decoding renormalise over them);
* a greedy constrained decoder: from the root, take the allowed child with the highest
  probability, until the end token. Every prefix it visits is a prefix of some label, so the
  conditionals it needs are exactly the teacher-forced ones: decoding is a walk over them and
  can never leave the label set;
* a check of free (unconstrained) answers: which label a generated sequence is, if any.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import DataError


class LabelTrie:
    """K labels as token-id sequences (without start/end tokens) and the end token id.

    Tensors built once (K labels, L = longest label + 1 for the end token, M = most children):
        inputs   (K, L)    start token, then the label's tokens (padded with the pad id)
        targets  (K, L)    the label's tokens, then the end token (padded with -1)
        lengths  (K,)      tokens + 1
        children (K, L, M) the token ids allowed at each step (padded with the first child)
        allowed  (K, L, M) which entries of ``children`` are real
        position (K, L)    where the label's own next token sits in ``children``
    """

    def __init__(self, labels: Sequence[Sequence[int]], start: int, end: int, pad: int) -> None:
        seqs = [tuple(int(t) for t in s) for s in labels]
        for i, s in enumerate(seqs):
            if not s:
                raise DataError(f"label number {i + 1} has no tokens; every label needs words")
            if end in s:
                raise DataError(f"label number {i + 1} contains the end token; remove it")
        if len(set(seqs)) < len(seqs):
            first = next(i for i, s in enumerate(seqs) if seqs.index(s) != i)
            raise DataError(f"label number {first + 1} has the same tokens as label number "
                            f"{seqs.index(seqs[first]) + 1}; give every label its own words")
        self.labels, self.start, self.end, self.pad = seqs, int(start), int(end), int(pad)
        full = [s + (self.end,) for s in seqs]  # closed by the end token
        k, length = len(full), max(len(s) for s in full)
        self.inputs = torch.full((k, length), self.pad, dtype=torch.long)
        self.targets = torch.full((k, length), -1, dtype=torch.long)
        for i, s in enumerate(full):
            self.inputs[i, 0] = self.start
            self.inputs[i, 1:len(s)] = torch.tensor(s[:-1], dtype=torch.long)
            self.targets[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        self.lengths = torch.tensor([len(s) for s in full], dtype=torch.long)
        kids = [[self.next_tokens(s[:t]) if t < len(s) else [] for t in range(length)] for s in full]
        m = max(len(c) for row in kids for c in row)
        self.children = torch.zeros((k, length, m), dtype=torch.long)
        self.allowed = torch.zeros((k, length, m), dtype=torch.bool)
        self.position = torch.zeros((k, length), dtype=torch.long)
        for i, row in enumerate(kids):
            for t, c in enumerate(row):
                if not c:
                    continue
                self.children[i, t, :] = c[0]
                self.children[i, t, : len(c)] = torch.tensor(c, dtype=torch.long)
                self.allowed[i, t, : len(c)] = True
                self.position[i, t] = c.index(full[i][t])

    def __len__(self) -> int:
        return len(self.labels)

    def next_tokens(self, prefix: Sequence[int]) -> list[int]:
        """The tokens allowed after ``prefix`` (sorted; the end token where a label ends)."""
        prefix, n = tuple(prefix), len(prefix)
        out = {(s + (self.end,))[n] for s in self.labels if len(s) + 1 > n and s[:n] == prefix}
        return sorted(out)

    def greedy(self, token_logp: torch.Tensor) -> torch.Tensor:
        """Greedy constrained decoding as a walk over teacher-forced conditionals.

        ``token_logp`` (B, K, L): log-probability of label k's t-th token given its prefix.
        Labels that share a prefix carry the same conditionals, so at each step the best
        allowed child is the best entry among the labels still alive. Returns label ids (B,).
        """
        b = token_logp.shape[0]
        targets = self.targets.to(token_logp.device)  # (K, L)
        steps = self.lengths.to(token_logp.device)  # (K,)
        alive = torch.ones((b, len(self)), dtype=torch.bool, device=token_logp.device)
        done = torch.zeros(b, dtype=torch.bool, device=token_logp.device)
        for t in range(targets.shape[1]):
            live = alive & (t < steps)[None, :]  # (B, K): labels with a token at step t
            s = token_logp[:, :, t].masked_fill(~live, float("-inf"))
            tok = targets[s.argmax(1), t]  # (B,) the chosen child
            keep = targets[None, :, t] == tok[:, None]  # (B, K)
            alive = torch.where(done[:, None], alive, alive & keep)
            done |= tok == self.end
        return alive.float().argmax(1)  # the one label whose end token was chosen

    def match(self, generated: torch.Tensor) -> torch.Tensor:
        """Free answers (B, T) of token ids, end token included -> label id, or -1 if invalid."""
        targets = self.targets.to(generated.device)  # (K, L)
        length = targets.shape[1]
        if generated.shape[1] < length:
            fill = generated.new_full((generated.shape[0], length - generated.shape[1]), -2)
            generated = torch.cat([generated, fill], 1)
        gen = generated[:, :length]  # (B, L): longer answers cannot end in time anyway
        valid = targets >= 0  # (K, L)
        same = ((gen[:, None, :] == targets[None]) | ~valid[None]).all(-1)  # (B, K)
        hit = same.any(1)
        return torch.where(hit, same.float().argmax(1), torch.full_like(hit, -1, dtype=torch.long))
