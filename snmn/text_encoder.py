"""Text encoder: question tokens → word embeddings, BiLSTM word states and a question vector.

"What color is the large cube?" becomes six embeddings e_s (the controller's text attention
later reads these, not the LSTM states), six 512-d states h_s = [forward_s ; backward_s] and
q = [forward final ; backward final]. Padding after the real length never leaks in: the forward
LSTM is causal, so its states up to the length ignore what follows; the backward LSTM runs over
each question reversed *within its own length*. No packing, so shapes stay static.

Shape legend: B batch, S question length, E embedding, H LSTM units per direction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def reverse_within_length(sequence: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `length` items and leave its padding in place ([B, S, ...])."""
    positions = torch.arange(sequence.shape[1], device=sequence.device)  # [S]
    lengths = lengths.to(sequence.device).unsqueeze(1)  # [B, 1]
    source = torch.where(positions < lengths, lengths - 1 - positions, positions)  # [B, S]
    index = source.view(*source.shape, *([1] * (sequence.dim() - 2))).expand_as(sequence)
    return sequence.gather(1, index)


def _tensorflow_lstm(input_dim: int, hidden: int) -> nn.LSTM:
    """One LSTM direction initialised and sized like TF's BasicLSTMCell (the official cell).

    Glorot-uniform over the joint [input+hidden, 4·hidden] kernel, zero bias, forget-gate bias 1
    (TF adds forget_bias=1.0), and a single bias per gate: PyTorch's second bias (bias_hh) is
    frozen at zero so the trainable parameters match the official count.
    """
    lstm = nn.LSTM(input_dim, hidden, batch_first=True)
    bound = math.sqrt(6.0 / (input_dim + hidden + 4 * hidden))
    with torch.no_grad():
        nn.init.uniform_(lstm.weight_ih_l0, -bound, bound)
        nn.init.uniform_(lstm.weight_hh_l0, -bound, bound)
        lstm.bias_ih_l0.zero_()
        lstm.bias_ih_l0[hidden : 2 * hidden] = 1.0  # PyTorch gate order: input, forget, cell, out
        lstm.bias_hh_l0.zero_()
    lstm.bias_hh_l0.requires_grad_(False)
    return lstm


class TextEncoder(nn.Module):
    """Embedding 300 → BiLSTM 256 per direction (official input_unit.build_input_unit)."""

    def __init__(self, vocab_size: int, embed_dim: int, lstm_dim: int) -> None:
        super().__init__()
        hidden = lstm_dim // 2
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.embedding.weight, std=math.sqrt(1.0 / embed_dim))
        self.forward_lstm = _tensorflow_lstm(embed_dim, hidden)
        self.backward_lstm = _tensorflow_lstm(embed_dim, hidden)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (embeddings [B, S, E], word states [B, S, 2H], question [B, 2H]).

        `lengths` must be at least 1; states at padded positions are zero.
        """
        embeddings = self.embedding(tokens)  # [B, S, E]
        lengths = lengths.to(tokens.device)
        forward_states, _ = self.forward_lstm(embeddings)  # [B, S, H]
        reversed_states, _ = self.backward_lstm(reverse_within_length(embeddings, lengths))
        backward_states = reverse_within_length(reversed_states, lengths)  # [B, S, H]
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, forward_states.shape[2])  # [B, 1, H]
        question = torch.cat(
            [forward_states.gather(1, last).squeeze(1), backward_states[:, 0]], dim=1
        )  # [B, 2H]
        valid = torch.arange(tokens.shape[1], device=tokens.device) < lengths.unsqueeze(1)
        states = torch.cat([forward_states, backward_states], dim=2) * valid.unsqueeze(2)
        return embeddings, states, question
