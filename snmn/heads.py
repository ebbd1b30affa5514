"""Output heads: the answer classifier (VQA) and the box localiser (CLEVR-Ref).

"What color is the large cube?" → the VQA head reads [q ; mem_T] and scores the 28 answers.
"The large cube left of the red sphere" → the REF head scores each grid cell from the final top
map a_T and regresses a box around the best cell (official output_unit.py with the CLEVR-Ref
configs: LOC_SCORES_POS_AFFINE, BBOX_REG_AS_FCN).

Shape legend: B batch, N = H·W cells, D kb channels, Dm memory, A answers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snmn.kb import xavier_linear


class AnswerHead(nn.Module):
    """Linear(A) ∘ dropout(keep 0.85) ∘ ELU ∘ Linear(512) over [q ; mem_T]."""

    def __init__(
        self, question_dim: int, memory_dim: int, hidden_dim: int, num_answers: int, keep: float
    ) -> None:
        super().__init__()
        self.hidden = xavier_linear(question_dim + memory_dim, hidden_dim)
        self.dropout = nn.Dropout(p=1.0 - keep)
        self.output = xavier_linear(hidden_dim, num_answers)

    def forward(self, question: Tensor, memory: Tensor) -> Tensor:
        """question [B, D], memory [B, Dm] → answer logits [B, A]."""
        hidden = nn.functional.elu(self.hidden(torch.cat([question, memory], dim=1)))
        return self.output(self.dropout(hidden))


class BoxHead(nn.Module):
    """Cell scores |w|·a_T + b with *scalar* w, b; box offsets conv1x1 (D → 4) from kb.

    The absolute value keeps the attention's sign (official "make sure att signs do not flip").
    w starts at 1 and b at 0 (the official draws both from Glorot over a scalar: a deliberate,
    harmless simplification — b cancels in the softmax and |w| only scales it).
    """

    def __init__(self, kb_dim: int) -> None:
        super().__init__()
        self.score_scale = nn.Parameter(torch.ones(()))
        self.score_bias = nn.Parameter(torch.zeros(()))
        self.offsets = xavier_linear(kb_dim, 4)

    def forward(self, top_attention: Tensor, kb: Tensor) -> tuple[Tensor, Tensor]:
        """a_T [B, N], kb [B, N, D] → (cell scores [B, N], box offsets [B, N, 4])."""
        scores = self.score_scale.abs() * top_attention + self.score_bias
        return scores, self.offsets(kb)
