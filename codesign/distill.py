"""Knowledge-distillation losses: the student learns from a float teacher's outputs and features.

* :func:`hinton` -- soft targets (Hinton, Vinyals, Dean, 2015): cross-entropy on the labels plus
  ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``; with several teachers, the mean of their
  softened outputs (multi-teacher averaging, as in You et al., KDD 2017).
* Feature losses on the penultimate features (``train.kd.feature_loss``), added to it:

  - ``hint`` -- FitNets (Romero et al., ICLR 2015): MSE between the teacher's features and the student's
    mapped by a learned linear regressor (``adapter``).
  - ``pkt`` -- probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): the cosine similarities
    within the batch, turned into conditional probabilities per sample, KL(teacher || student). No
    regressor: it matches the geometry of the feature space, not the features, so widths may differ.
  - ``cc`` -- correlation congruence (Peng et al., ICCV 2019): the batch's Gaussian-RBF correlation
    matrix (second-order Taylor expansion, gamma = 0.4, on L2-normalized features), MSE between teacher
    and student. No regressor either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

FEATURE_LOSSES = ("hint", "pkt", "cc")


def hinton(out: torch.Tensor, teacher_out: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor,
           temperature: float, alpha: float) -> torch.Tensor:
    """``(1 - alpha) * CE(out, labels) + alpha * T^2 * KL(p_teacher^T || p_student^T)``; with several
    teachers ``p_teacher^T`` is the mean of their softened outputs (multi-teacher averaging)."""
    t = temperature
    outs = [teacher_out] if isinstance(teacher_out, torch.Tensor) else list(teacher_out)
    p_teacher = torch.stack([F.softmax(o / t, 1) for o in outs]).mean(dim=0)
    soft = F.kl_div(F.log_softmax(out / t, 1), p_teacher, reduction="batchmean")
    return (1 - alpha) * F.cross_entropy(out, labels) + alpha * t * t * soft


def pkt(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """PKT: KL divergence between the teacher's and the student's cosine-similarity distributions over the
    batch (features ``(batch, dim)``; the two widths may differ)."""

    def cond_prob(f: torch.Tensor) -> torch.Tensor:
        f = f / (f.norm(dim=1, keepdim=True) + eps)
        sim = (f @ f.t() + 1.0) / 2.0  # cosine similarity mapped to [0, 1]
        return sim / sim.sum(dim=1, keepdim=True)

    p_s, p_t = cond_prob(student.flatten(1)), cond_prob(teacher.flatten(1))
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).sum(dim=1).mean()


def cc(student: torch.Tensor, teacher: torch.Tensor, gamma: float = 0.4, order: int = 2) -> torch.Tensor:
    """Correlation congruence: MSE between the batch correlation matrices of teacher and student, with
    the Gaussian RBF kernel ``exp(-gamma * |a - b|^2)`` of L2-normalized features expanded to ``order``
    (``|a - b|^2 = 2 - 2 a.b``, so ``k = exp(-2 gamma) * sum_p (2 gamma a.b)^p / p!``)."""

    def corr(f: torch.Tensor) -> torch.Tensor:
        f = F.normalize(f.flatten(1), dim=1)
        sim = f @ f.t()
        return math.exp(-2 * gamma) * sum((2 * gamma * sim) ** p / math.factorial(p) for p in range(order + 1))

    return F.mse_loss(corr(student), corr(teacher))


def feature_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor,
                 adapter: torch.nn.Module | None = None) -> torch.Tensor:
    """The feature term ``kind`` (one of :data:`FEATURE_LOSSES`) between penultimate features."""
    if kind == "hint":
        if adapter is None:
            raise ValueError("the FitNets hint needs the regressor (adapter) from the student's to the teacher's width")
        return F.mse_loss(adapter(student), teacher)
    if kind == "pkt":
        return pkt(student, teacher)
    if kind == "cc":
        return cc(student, teacher)
    raise ValueError(f"unknown feature loss {kind!r}; one of {', '.join(FEATURE_LOSSES)}")
