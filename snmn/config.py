"""ModelConfig: every size and switch of the SNMN model, defaults = the official CLEVR configs.

For "What color is the large cube?" the controller runs T=9 steps over a 14×14 grid of
ResNet-101 conv4 features; these numbers, and every fidelity flag, live here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the network (see ../shared/spec/model.md, "Sizes")."""

    num_steps: int = 9  # T, official exp_clevr config
    stack_length: int = 8  # L; slot 0 is the empty-bottom sentinel
    embed_dim: int = 300  # word embedding, trained from N(0, 1/sqrt(300))
    lstm_dim: int = 512  # BiLSTM output (256 per direction)
    feature_dim: int = 1024  # ResNet-101 C4 channels
    feature_height: int = 14
    feature_width: int = 14
    pos_enc_dim: int = 128  # sin/cos of row and column
    kb_dim: int = 512  # knowledge base channels after the two 1×1 convs
    memory_dim: int = 512
    vocab_size: int = 0  # 0 = take it from the tokeniser's vocabulary
    num_answers: int = 28
    dropout_keep: float = 0.85  # official keep probability of the answer MLP
    pointer_sharpen: str = "hard"  # hard (one-hot argmax, official) | soft (softmax(p/0.2))
    soft_pointer_temperature: float = 0.2
    validity_mask: bool = False  # official: off
