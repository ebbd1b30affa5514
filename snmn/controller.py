"""Layout controller: at each of T steps, which module to run and which words it reads.

For "Is there a cube left of the red sphere?" a good controller attends to "red sphere" and puts
its weight on Find at t=0, on "left of" and Transform at t=1, on "cube" and Filter at t=2, and on
"Is there" and DescribeOne at t=3. It never reads the stack, the memory or the image, so all T
steps run before the modules do (docs/model.md, "Layout controller"; official controller.py with
LINEAR_MODULE_WEIGHTS and USE_WORD_EMBED, as in every official CLEVR config):

    q_t  = Linear_t(q)                       a separate 512→512 map per step
    u    = Linear([q_t ; c_{t-1}])           c_{-1} is a learned 300-d vector
    w_t  = softmax(Linear(u))                module weights, bias-free logits
    cv_t = softmax_s(Linear(u ⊙ h_s))        text attention, masked to the real length
    c_t  = Σ_s cv_{t,s} e_s                  control over the word embeddings

Shape legend: B batch, S question length, T steps, D LSTM width, E embedding, M modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snmn.kb import xavier_linear


@dataclass
class ControllerOutput:
    controls: Tensor  # [B, T, E]  c_t, what each step's modules read
    module_logits: Tensor  # [B, T, M]  raw, for the layout loss
    text_attention: Tensor  # [B, T, S]  cv_t, zero on padding


class LayoutController(nn.Module):
    """The T-step controller; `forward` returns ControllerOutput for all steps at once."""

    def __init__(self, num_steps: int, lstm_dim: int, embed_dim: int, num_modules: int) -> None:
        super().__init__()
        self.num_steps = num_steps
        # T separate 512→512 maps stored as one Linear (block t of the rows is Linear_t), so
        # all q_t come from one matmul; each block is Glorot-initialised like its own layer.
        self.step_projection = nn.Linear(lstm_dim, num_steps * lstm_dim)
        bound = math.sqrt(6.0 / (lstm_dim + lstm_dim))
        nn.init.uniform_(self.step_projection.weight, -bound, bound)
        nn.init.zeros_(self.step_projection.bias)
        self.combine = xavier_linear(lstm_dim + embed_dim, lstm_dim)
        self.module_scores = xavier_linear(lstm_dim, num_modules, bias=False)
        self.word_scores = xavier_linear(lstm_dim, 1)
        self.initial_control = nn.Parameter(torch.randn(embed_dim) * math.sqrt(1.0 / embed_dim))

    def forward(
        self, question: Tensor, states: Tensor, embeddings: Tensor, lengths: Tensor
    ) -> ControllerOutput:
        """question [B, D], states [B, S, D], embeddings [B, S, E], lengths [B]."""
        batch, length, width = states.shape
        step_questions = self.step_projection(question).view(batch, self.num_steps, width)
        valid = torch.arange(length, device=states.device) < lengths.to(states.device)[:, None]
        word_weight = self.word_scores.weight.view(1, width)  # [1, D]
        control = self.initial_control.expand(batch, -1)  # [B, E]
        controls, logits, attentions = [], [], []
        for step in range(self.num_steps):
            mixed = self.combine(torch.cat([step_questions[:, step], control], dim=1))  # [B, D]
            logits.append(self.module_scores(mixed))  # [B, M]
            # Linear(u ⊙ h_s) = h_s · (u ⊙ w) + b: one batched matrix-vector product
            query = (mixed * word_weight).unsqueeze(2)  # [B, D, 1]
            word_logits = torch.bmm(states, query).squeeze(2) + self.word_scores.bias  # [B, S]
            attention = word_logits.masked_fill(~valid, float("-inf")).softmax(dim=1)  # [B, S]
            control = torch.bmm(attention.unsqueeze(1), embeddings).squeeze(1)  # [B, E]
            controls.append(control)
            attentions.append(attention)
        return ControllerOutput(
            controls=torch.stack(controls, dim=1),
            module_logits=torch.stack(logits, dim=1),
            text_attention=torch.stack(attentions, dim=1),
        )
