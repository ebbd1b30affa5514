"""The question-only baseline: how far does "How many cubes are there?" get without the image?

CLEVR's answers are balanced per question family, but a blind model still learns that "What
size is ...?" answers large or small and guesses the majority; the gap between it and SNMN is
what looking at the image buys. The baseline is SNMN's own text encoder (embedding → BiLSTM →
question vector q) and its answer head (ELU MLP with dropout) over q alone: no controller, no
stack, no image features. It trains in seconds to minutes on the tokenised questions only.

Shape legend: B batch, S question length, A answers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.data.datasets import EpochBatchSampler, QuestionTable
from pipeline.evaluation.metrics import SplitPredictions
from snmn.config import ModelConfig
from snmn.heads import AnswerHead
from snmn.text_encoder import TextEncoder

GRAD_CLIP = 8.0  # as SNMN's training


class QuestionOnlyModel(nn.Module):
    """Answer logits [B, A] from the question alone (SNMN's text encoder and answer head)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.text_encoder = TextEncoder(config.vocab_size, config.embed_dim, config.lstm_dim)
        self.answer_head = AnswerHead(
            config.lstm_dim, 0, config.vqa_hidden_dim, config.num_answers, config.dropout_keep
        )

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        _, _, question = self.text_encoder(tokens, lengths)  # [B, 2H]
        no_memory = question.new_zeros(question.shape[0], 0)  # [B, 0]
        return self.answer_head(question, no_memory)


def _batch(table: QuestionTable, rows: list[int], device: torch.device) -> tuple[Tensor, ...]:
    index = np.asarray(rows, dtype=np.int64)
    longest = int(table.lengths[index].max())
    tokens = torch.from_numpy(table.tokens[index, :longest]).to(device)  # [B, S]
    lengths = torch.from_numpy(table.lengths[index]).to(device)  # [B]
    answers = torch.from_numpy(table.answers[index]).to(device)  # [B], -1 unknown
    return tokens, lengths, answers


def train_question_only(
    config: ModelConfig,
    train: QuestionTable,
    iterations: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    device: torch.device,
) -> QuestionOnlyModel:
    """Train the baseline for `iterations` Adam steps on shuffled batches of `train`."""
    torch.manual_seed(seed)
    model = QuestionOnlyModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    batch_size = min(batch_size, len(train))
    sampler = iter(EpochBatchSampler(len(train), batch_size, 0, 1, seed=seed, start_step=0))
    model.train()
    for _ in range(iterations):
        tokens, lengths, answers = _batch(train, next(sampler), device)
        loss = nn.functional.cross_entropy(model(tokens, lengths), answers, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
    return model.eval()


@torch.no_grad()
def predict_question_only(
    model: QuestionOnlyModel,
    table: QuestionTable,
    rows: list[int],
    batch_size: int,
    device: torch.device,
) -> SplitPredictions:
    """The baseline's answers for `rows` (no boxes, no layout)."""
    model.eval()
    answers = []
    for start in range(0, len(rows), batch_size):
        tokens, lengths, _ = _batch(table, rows[start : start + batch_size], device)
        answers.append(model(tokens, lengths).argmax(dim=1).cpu())
    size = len(rows)
    return SplitPredictions(
        rows=np.asarray(rows, dtype=np.int64),
        answers=torch.cat(answers).numpy() if answers else np.zeros(0, np.int64),
        boxes=np.full((size, 4), np.nan),
        modules=np.zeros((size, 0), np.int64),
    )
