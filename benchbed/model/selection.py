"""Choosing what to keep under a ReLU budget from per-element scores: the one top-k that SNL's
alphas, AutoReP's scores, RLNet's mismatch and any other scoring method land on a budget with."""
from __future__ import annotations

from typing import Mapping

import torch


def top_k(scores: Mapping[str, torch.Tensor], budget: int, sizes: Mapping[str, int] | None = None) -> dict[str, torch.Tensor]:
    """0/1 masks shaped like ``scores`` (by site name) that keep the highest scores until ``budget`` is
    spent. Each element of ``scores[name]`` stands for ``sizes[name]`` pixels (1 by default; a per-channel
    score of an H×W map stands for H·W). Elements are taken in descending order — a stable sort, so
    ties (untouched scores) go to earlier sites and positions — and one that would overshoot the
    budget is skipped: unit elements land exactly on it, larger ones on it or just under."""
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().float().cpu() for n in names])
    keep = torch.zeros_like(flat)
    order = torch.sort(flat, descending=True, stable=True).indices
    unit = sizes is None or all(sizes[n] == 1 for n in names)
    if unit:
        keep[order[:budget]] = 1
    else:
        cost = torch.cat([torch.full((scores[n].numel(),), int(sizes[n])) for n in names])
        left = budget
        for i in order.tolist():
            if cost[i] <= left:
                keep[i] = 1
                left -= int(cost[i])
            if left == 0:
                break
    return {n: part.view(scores[n].shape) for n, part in zip(names, keep.split([scores[n].numel() for n in names]))}
