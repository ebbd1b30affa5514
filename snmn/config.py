"""ModelConfig: every size and switch of the SNMN model, defaults = the official CLEVR configs.

For "What color is the large cube?" the controller runs T=9 steps over a 14×14 grid of
ResNet-101 conv4 features; these numbers, and every fidelity flag, live here. "official" below
means the TensorFlow release (models_clevr_snmn/config.py merged with exp_clevr_snmn/cfgs/*.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass

POINTER_SHARPENINGS = ("hard", "soft")
TASKS = ("vqa", "ref", "joint")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the network (see docs/model.md, "Sizes")."""

    num_steps: int = 9  # T, official MODEL.T_CTRL
    stack_length: int = 8  # L, official cfgs STACK.LENGTH; slot 0 is the empty-bottom sentinel
    embed_dim: int = 300  # word embedding, trained from N(0, 1/sqrt(300)); official EMBED_DIM
    lstm_dim: int = 512  # BiLSTM output (256 per direction); official LSTM_DIM
    feature_dim: int = 1024  # ResNet-101 C4 channels; official FEAT_DIM
    feature_height: int = 14  # official H_FEAT
    feature_width: int = 14  # official W_FEAT
    pos_enc_dim: int = 128  # sin/cos of row and column; official PE_DIM
    kb_dim: int = 512  # knowledge base channels after the two 1×1 convs; official KB_DIM
    memory_dim: int = 512  # official NMN.MEM_DIM
    vocab_size: int = 0  # 0 = take it from the tokeniser's vocabulary (must be set to build)
    num_answers: int = 28  # the 28 CLEVR answers
    vqa_hidden_dim: int = 512  # answer MLP width; official VQA_OUTPUT_DIM
    dropout_keep: float = 0.85  # keep probability of the answer MLP; official DROPOUT_KEEP_PROB
    pointer_sharpen: str = "hard"  # hard (one-hot argmax, official) | soft (softmax(p/T))
    soft_pointer_temperature: float = 0.2  # official SOFT_SHARPEN_TEMP
    stack_guard: bool = True  # pointer stays at the top/bottom; official cfgs GUARD_STACK_PTR
    validity_mask: bool = False  # official VALIDATE_MODULES: off
    hard_layout: bool = False  # run only the argmax module per step (inference); official: off
    task: str = "vqa"  # heads to build: vqa | ref (CLEVR-Ref) | joint (both)
    fast: bool = True  # docs/model.md "Exact rewrites"; False = the reference formulation

    def __post_init__(self) -> None:
        if self.pointer_sharpen not in POINTER_SHARPENINGS:
            raise ValueError(
                f"model.pointer_sharpen: expected one of {POINTER_SHARPENINGS}, "
                f"got {self.pointer_sharpen!r}"
            )
        if self.task not in TASKS:
            raise ValueError(f"model.task: expected one of {TASKS}, got {self.task!r}")
        if self.lstm_dim % 2:
            raise ValueError(f"model.lstm_dim: must be even (two directions), got {self.lstm_dim}")
        if self.pos_enc_dim % 4:
            raise ValueError(f"model.pos_enc_dim: must be a multiple of 4, got {self.pos_enc_dim}")
        if self.stack_length < 3:
            raise ValueError(f"model.stack_length: must be at least 3, got {self.stack_length}")
        if not 0.0 < self.dropout_keep <= 1.0:
            raise ValueError(f"model.dropout_keep: must be in (0, 1], got {self.dropout_keep}")

    @property
    def num_cells(self) -> int:
        """H·W, the number of grid cells an attention map covers."""
        return self.feature_height * self.feature_width

    @property
    def builds_vqa(self) -> bool:
        return self.task in ("vqa", "joint")

    @property
    def builds_ref(self) -> bool:
        return self.task in ("ref", "joint")
