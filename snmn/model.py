"""The SNMN model: text encoder → controller → T steps of soft module execution → heads.

For "Are there more cubes than spheres?" the controller puts its weight on Find, Find,
DescribeTwo and six NoOps; at every step all nine modules run on the stack state and their
results are averaged with the controller's weights w_t (paper Section 3.2, "soft program
execution"): A = Σ_m w_m A^m, mem = Σ_m w_m mem^m, p = sharpen(Σ_m w_m p^m). After T steps the
VQA head reads mem_T and the REF head reads the top map a_T.

Two execution paths give the same numbers (tested): `fast` (default, docs/model.md "Exact
rewrites") computes the controller for all T steps first, the Find maps of all steps and the
Scene map from one product each against kb and kb², and keeps only Transform and the Describe
modules' pooling in the T-step loop; the reference path computes every module as written.
Shapes are static (no Python loop over the batch, no data-dependent shapes), so a step can be
captured by CUDA graphs or torch.compile.

Shape legend: B batch, S question length, T steps, H×W grid, N = H·W, L stack slots, D kb
channels, M modules, A answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from snmn import stack as st
from snmn.config import ModelConfig
from snmn.controller import LayoutController
from snmn.heads import AnswerHead, BoxHead
from snmn.kb import KnowledgeBase
from snmn.layout import MODULE_NAMES
from snmn.modules import StepInputs, build_modules, validity_matrix
from snmn.shared_products import SharedOperand
from snmn.stack import StackState
from snmn.text_encoder import TextEncoder


@dataclass
class SNMNOutput:
    """Everything the losses, metrics and visualisations read."""

    module_logits: Tensor  # [B, T, M] raw controller logits (layout loss)
    module_weights: Tensor  # [B, T, M] weights used (after validity mask / hard layout)
    text_attention: Tensor  # [B, T, S]
    answer_logits: Tensor | None = None  # [B, A] (VQA head)
    cell_scores: Tensor | None = None  # [B, N] (REF head)
    box_offsets: Tensor | None = None  # [B, N, 4] (REF head), grid units
    top_attention: Tensor | None = None  # [B, T, H, W] logits at the pointer after each step
    stack_pointers: Tensor | None = None  # [B, T, L] pointer after each step


@dataclass
class _FastMaps:
    """The fast path's per-batch products (docs/model.md, "Exact rewrites").

    kb, kbᵀ and kb²ᵀ are SharedOperands: the steps' products against them get their kb
    gradient from one product after the loop (snmn/shared_products.py).
    """

    kb: SharedOperand  # [B, N, D]
    kb_transposed: SharedOperand  # [B, D, N]
    kb_squared_transposed: SharedOperand  # [B, D, N]
    find_maps: Tensor  # [B, T, N] Find's map at every step
    scene_map: Tensor  # [B, N]


class SNMN(nn.Module):
    """Stack Neural Module Network; `forward(tokens, lengths, features)` → SNMNOutput."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("model.vocab_size: must be set (> 0) before building the model")
        self.config = config
        self.text_encoder = TextEncoder(config.vocab_size, config.embed_dim, config.lstm_dim)
        self.knowledge_base = KnowledgeBase(
            config.feature_dim,
            config.pos_enc_dim,
            config.kb_dim,
            config.feature_height,
            config.feature_width,
        )
        self.controller = LayoutController(
            config.num_steps, config.lstm_dim, config.embed_dim, len(MODULE_NAMES)
        )
        self.nmn = build_modules(MODULE_NAMES, config.embed_dim, config.kb_dim, config.memory_dim)
        self.register_buffer(
            "validity", validity_matrix(self.nmn, config.stack_length), persistent=False
        )  # [L, M]
        self.answer_head = None
        self.box_head = None
        if config.builds_vqa:
            self.answer_head = AnswerHead(
                config.lstm_dim,
                config.memory_dim,
                config.vqa_hidden_dim,
                config.num_answers,
                config.dropout_keep,
            )
        if config.builds_ref:
            self.box_head = BoxHead(config.kb_dim)

    def forward(
        self,
        tokens: Tensor,
        lengths: Tensor,
        features: Tensor | None = None,
        hard_layout: bool | None = None,
        head: str | None = None,
    ) -> SNMNOutput:
        """tokens [B, S] int64, lengths [B] (≥ 1), features [B, H, W, C] or None.

        Without features only the controller runs (layout, text attention). `hard_layout`
        overrides config.hard_layout: run only the argmax module at each step (inference).
        `head` "vqa" or "ref" runs only that task's head (a joint model's update on one task,
        whose loss reads nothing of the other); None runs every head the model has.
        """
        config = self.config
        hard_layout = config.hard_layout if hard_layout is None else hard_layout
        embeddings, states, question = self.text_encoder(tokens, lengths)
        plan = self.controller(question, states, embeddings, lengths)
        output = SNMNOutput(
            module_logits=plan.module_logits,
            module_weights=plan.module_logits.softmax(dim=2),
            text_attention=plan.text_attention,
        )
        if features is None:
            return output
        kb = self.knowledge_base(features).flatten(1, 2)  # [B, N, D]
        final, weights, tops, pointers = self._execute(
            kb, plan.controls, output.module_weights, hard_layout
        )
        output.module_weights = weights
        output.top_attention = tops.unflatten(2, (config.feature_height, config.feature_width))
        output.stack_pointers = pointers
        if self.answer_head is not None and head in (None, "vqa"):
            output.answer_logits = self.answer_head(question, final.memory)
        if self.box_head is not None and head in (None, "ref"):
            output.cell_scores, output.box_offsets = self.box_head(tops[:, -1], kb)
        return output

    def _execute(
        self, kb: Tensor, controls: Tensor, weights: Tensor, hard_layout: bool
    ) -> tuple[StackState, Tensor, Tensor, Tensor]:
        """Unroll T steps → (final state, weights [B,T,M], tops [B,T,N], pointers [B,T,L])."""
        config = self.config
        batch, cells, _ = kb.shape
        state = st.initial_state(batch, cells, config.stack_length, config.memory_dim, like=kb)
        fast = self._fast_maps(kb, controls) if config.fast else None
        used_weights, tops, pointers = [], [], []
        for step in range(config.num_steps):
            inputs = self._step_inputs(kb, controls[:, step], step, state, fast)
            step_weights = self._step_weights(weights[:, step], state.pointer, hard_layout)
            results = [module(state, inputs) for module in self.nmn.values()]
            state = self._average(results, step_weights)
            used_weights.append(step_weights)
            tops.append(st.read(state.stack, state.pointer))
            pointers.append(state.pointer)
        return state, torch.stack(used_weights, 1), torch.stack(tops, 1), torch.stack(pointers, 1)

    def _fast_maps(self, kb: Tensor, controls: Tensor) -> _FastMaps:
        """Everything that does not depend on the stack, for all T steps at once."""
        transposed = kb.transpose(1, 2).contiguous()  # [B, D, N]
        squared_transposed = transposed.pow(2)  # [B, D, N]
        kb_transposed = SharedOperand(transposed)
        kb_squared_transposed = SharedOperand(squared_transposed)
        return _FastMaps(
            kb=SharedOperand(kb),
            kb_transposed=kb_transposed,
            kb_squared_transposed=kb_squared_transposed,
            find_maps=self.nmn["Find"].attention_all_steps(
                kb_transposed, kb_squared_transposed, controls
            ),
            scene_map=self.nmn["Scene"].attention_fast(transposed, squared_transposed),
        )

    def _step_inputs(
        self, kb: Tensor, control: Tensor, step: int, state: StackState, fast: _FastMaps | None
    ) -> StepInputs:
        """Step t's inputs: precomputed maps and shared pooling (fast), or computed as written."""
        guard = self.config.stack_guard
        if fast is None:
            return StepInputs(
                control=control,
                kb=kb,
                find_map=self.nmn["Find"].attention(kb, control),
                scene_map=self.nmn["Scene"].attention(kb),
                guard=guard,
            )
        top = st.read(state.stack, state.pointer)  # [B, N]
        below = st.read(state.stack, st.pop(state.pointer, guard))  # [B, N]
        return StepInputs(
            control=control,
            kb=kb,
            find_map=fast.find_maps[:, step],
            scene_map=fast.scene_map,
            guard=guard,
            kb_transposed=fast.kb_transposed,
            kb_squared_transposed=fast.kb_squared_transposed,
            # x(top), x(below) as st.attended_features: softmax over the cells, then pool kb
            pooled=fast.kb.left_product(torch.stack([top, below], dim=1).softmax(dim=2)),
        )

    def _step_weights(self, weights: Tensor, pointer: Tensor, hard_layout: bool) -> Tensor:
        """Optional validity mask w ⊙ (p·V) renormalised, then optional one-hot argmax."""
        if self.config.validity_mask:
            weights = weights * (pointer @ self.validity)  # [B, M]
            weights = weights / weights.sum(dim=1, keepdim=True)  # NoOp is always valid
        if hard_layout:
            weights = st.one_hot_argmax(weights)
        return weights

    def _average(self, results: list[StackState], weights: Tensor) -> StackState:
        """Σ_m w_m (A^m, p^m, mem^m), then sharpen the pointer."""
        stacks = torch.stack([r.stack for r in results], dim=1)  # [B, M, N, L]
        pointers = torch.stack([r.pointer for r in results], dim=1)  # [B, M, L]
        memories = torch.stack([r.memory for r in results], dim=1)  # [B, M, Dm]
        # broadcast products and sums over M: the backward of a [B,1,M] × [B,M,·] batched
        # product is an outer product that batched GEMM computes slowly on a CPU
        mix = weights.unsqueeze(2)  # [B, M, 1]
        stack = (stacks * mix.unsqueeze(3)).sum(dim=1)  # [B, N, L]
        pointer = (pointers * mix).sum(dim=1)  # [B, L]
        memory = (memories * mix).sum(dim=1)  # [B, Dm]
        pointer = st.sharpen(
            pointer, self.config.pointer_sharpen, self.config.soft_pointer_temperature
        )
        return StackState(stack, pointer, memory)


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of parameters the optimiser updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
