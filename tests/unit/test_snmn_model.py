"""The whole model: parameter count, fast == reference, gradients, padding, validity, layouts."""

import dataclasses

import pytest
import torch

from snmn import stack as st
from snmn.config import ModelConfig
from snmn.layout import MODULE_NAMES
from snmn.losses import training_loss
from snmn.model import SNMN, count_trainable_parameters
from snmn.modules import StepInputs

TINY = ModelConfig(
    vocab_size=20,
    feature_dim=16,
    feature_height=3,
    feature_width=4,
    embed_dim=8,
    lstm_dim=16,
    pos_enc_dim=8,
    kb_dim=16,
    memory_dim=12,
    num_answers=5,
    vqa_hidden_dim=16,
    num_steps=5,
    stack_length=6,
    task="joint",
)
# CLEVR's question vocabulary: ~88 distinct training words + <pad> and <unk> (data/text.py).
CLEVR_VOCAB = 90


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_batch(config=TINY, batch=4, length=7, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, config.vocab_size, (batch, length), generator=generator)
    lengths = torch.tensor([7, 3, 1, 5][:batch])
    features = torch.randn(
        batch,
        config.feature_height,
        config.feature_width,
        config.feature_dim,
        generator=generator,
        dtype=dtype,
    )
    return tokens, lengths, features


def build(config=TINY, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return SNMN(config).to(dtype).eval()


def joint_loss(output, config=TINY):
    batch = output.module_logits.shape[0]
    return training_loss(
        output,
        answers=torch.arange(batch) % config.num_answers,
        layouts=torch.arange(batch * config.num_steps).view(batch, -1) % len(MODULE_NAMES),
        target_cells=torch.arange(batch) % config.num_cells,
        target_offsets=torch.ones(batch, 4, dtype=output.box_offsets.dtype),
        entropy_weight=0.1,
    )["total"]


def test_default_vqa_model_has_the_official_7_32_million_parameters():
    model = SNMN(ModelConfig(vocab_size=CLEVR_VOCAB))
    count = count_trainable_parameters(model)
    print(f"trainable parameters (vocabulary {CLEVR_VOCAB}): {count:,}")
    assert abs(count - 7.32e6) <= 0.01 * 7.32e6
    # the same number worked out by hand from docs/model.md's sizes (TF: one bias per LSTM gate)
    lstm = 2 * (4 * 256 * (300 + 256) + 4 * 256)
    kb = 1152 * 512 + 512 + 512 * 512 + 512
    controller = 9 * (512 * 512 + 512) + 812 * 512 + 512 + 512 * 9 + 513 + 300
    modules = 2 * (300 * 512 + 512 + 513) + 513 + 2 * (300 * 512 + 512 + 1324 * 512 + 512)
    head = 1024 * 512 + 512 + 512 * 28 + 28
    assert count == CLEVR_VOCAB * 300 + lstm + kb + controller + modules + head


def test_ref_head_adds_two_scalars_and_the_offset_conv():
    vqa = count_trainable_parameters(SNMN(dataclasses.replace(TINY, task="vqa")))
    joint = count_trainable_parameters(SNMN(TINY))
    assert joint - vqa == 2 + TINY.kb_dim * 4 + 4


@pytest.mark.parametrize(
    "flags",
    [{}, {"pointer_sharpen": "soft"}, {"validity_mask": True}, {"stack_guard": False}],
    ids=["default", "soft-pointer", "validity", "no-guard"],
)
def test_fast_equals_reference_outputs_and_gradients(flags):
    """float64, so the two formulations must agree to 1e-9 (they are exact rewrites)."""
    config = dataclasses.replace(TINY, **flags)
    fast = build(config, dtype=torch.float64)
    reference = build(dataclasses.replace(config, fast=False), dtype=torch.float64)
    reference.load_state_dict(fast.state_dict())
    tokens, lengths, features = tiny_batch(dtype=torch.float64)
    outputs = [model(tokens, lengths, features) for model in (fast, reference)]
    for field in dataclasses.fields(outputs[0]):
        a, b = getattr(outputs[0], field.name), getattr(outputs[1], field.name)
        assert torch.allclose(a, b, rtol=0, atol=1e-9), field.name
    for output in outputs:
        joint_loss(output).backward()
    pairs = zip(fast.named_parameters(), reference.named_parameters(), strict=True)
    for (name, a), (_, b) in pairs:
        if a.requires_grad:
            assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-9), name


def test_fast_equals_reference_in_float32_at_a_realistic_width():
    config = dataclasses.replace(
        TINY, kb_dim=256, feature_dim=64, feature_height=7, feature_width=7
    )
    fast, reference = build(config), build(dataclasses.replace(config, fast=False))
    reference.load_state_dict(fast.state_dict())
    tokens, lengths, features = tiny_batch(config)
    a, b = fast(tokens, lengths, features), reference(tokens, lengths, features)
    assert torch.allclose(a.answer_logits, b.answer_logits, atol=1e-4)
    assert torch.allclose(a.top_attention, b.top_attention, atol=1e-4)


def test_gradients_reach_every_parameter_that_should_learn():
    model = build(dataclasses.replace(TINY, pointer_sharpen="soft"))
    model.train()
    joint_loss(model(*tiny_batch())).backward()
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        "text_encoder.forward_lstm.bias_hh_l0",
        "text_encoder.backward_lstm.bias_hh_l0",
    }
    # Official parameters that shift every logit of a softmax equally, so they cannot learn
    # (kept for fidelity and the parameter count): the text-attention bias, the REF bias b.
    shift_only = {"controller.word_scores.bias", "box_head.score_bias"}
    for name, parameter in model.named_parameters():
        if name in shift_only:
            assert parameter.grad.abs().max() < 1e-6, name
        elif parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_output_shapes():
    tokens, lengths, features = tiny_batch()
    output = build()(tokens, lengths, features)
    b, t, s, m = 4, TINY.num_steps, tokens.shape[1], len(MODULE_NAMES)
    assert output.module_logits.shape == output.module_weights.shape == (b, t, m)
    assert output.text_attention.shape == (b, t, s)
    assert output.answer_logits.shape == (b, TINY.num_answers)
    assert output.cell_scores.shape == (b, TINY.num_cells)
    assert output.box_offsets.shape == (b, TINY.num_cells, 4)
    assert output.top_attention.shape == (b, t, TINY.feature_height, TINY.feature_width)
    assert output.stack_pointers.shape == (b, t, TINY.stack_length)


def test_padding_changes_nothing_and_gets_no_attention():
    model = build()
    tokens, lengths, features = tiny_batch()
    padded = torch.cat([tokens, torch.randint(0, 20, (4, 5))], dim=1)
    short = tokens.clone()
    for row, length in enumerate(lengths):
        short[row, length:] = 0  # <pad>
    a = model(short, lengths, features)
    b = model(padded, lengths, features)
    assert torch.allclose(a.answer_logits, b.answer_logits, atol=1e-6)
    assert torch.allclose(a.module_logits, b.module_logits, atol=1e-6)
    assert torch.allclose(b.text_attention[:, :, : tokens.shape[1]], a.text_attention, atol=1e-6)
    valid = torch.arange(padded.shape[1]) < lengths[:, None]  # [B, S]
    assert b.text_attention.masked_select(~valid[:, None, :]).abs().max() == 0
    assert torch.allclose(b.text_attention.sum(2), torch.ones(4, TINY.num_steps))


class FixedLogits(torch.nn.Module):
    """Stands in for the controller's module scorer: the same logits for every input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, mixed):
        return self.logits.expand(mixed.shape[0], -1)


def test_validity_mask_never_pops_an_empty_stack():
    """A controller that always wants And: the mask must hold it off until two maps exist."""
    config = dataclasses.replace(TINY, validity_mask=True)
    preference = torch.zeros(len(MODULE_NAMES))
    preference[MODULE_NAMES.index("And")], preference[MODULE_NAMES.index("Find")] = 5.0, 4.0
    model = build(config)
    model.controller.module_scores = FixedLogits(preference)
    tokens, lengths, features = tiny_batch()
    output = model(tokens, lengths, features)
    pops = torch.tensor([module.pops for module in model.nmn.values()])  # [M]
    pointers = torch.cat(
        [
            st.initial_state(4, 1, config.stack_length, 1, features).pointer[:, None],
            output.stack_pointers[:, :-1],
        ],
        dim=1,
    )  # pointer before each step
    position = pointers.argmax(dim=2)  # [B, T]
    too_deep = pops[None, None, :] > position[:, :, None]  # [B, T, M]
    assert output.module_weights.masked_select(too_deep).abs().max() == 0
    assert output.module_weights[:, 0, MODULE_NAMES.index("And")].abs().max() == 0
    # the check can fail: without the mask the controller runs And on the empty stack
    model.config = dataclasses.replace(config, validity_mask=False)
    assert model(tokens, lengths, features).module_weights[:, 0, 4].min() > 0.5


def test_hard_layout_runs_only_the_argmax_module():
    model = build(dataclasses.replace(TINY, fast=False))
    tokens, lengths, features = tiny_batch()
    output = model(tokens, lengths, features, hard_layout=True)
    chosen = output.module_logits.argmax(dim=2)  # [B, T]
    assert torch.equal(output.module_weights.argmax(dim=2), chosen)
    assert torch.equal(output.module_weights.sum(2), torch.ones(4, TINY.num_steps))
    # replay: execute only the chosen module, example by example
    embeddings, states, question = model.text_encoder(tokens, lengths)
    controls = model.controller(question, states, embeddings, lengths).controls
    kb = model.knowledge_base(features).flatten(1, 2)
    for row in range(4):
        state = st.initial_state(1, TINY.num_cells, TINY.stack_length, TINY.memory_dim, kb)
        for step in range(TINY.num_steps):
            control = controls[row : row + 1, step]
            inputs = StepInputs(
                control=control,
                kb=kb[row : row + 1],
                find_map=model.nmn["Find"].attention(kb[row : row + 1], control),
                scene_map=model.nmn["Scene"].attention(kb[row : row + 1]),
                guard=True,
            )
            state = model.nmn[MODULE_NAMES[chosen[row, step]]](state, inputs)
        top = st.read(state.stack, state.pointer).view(TINY.feature_height, TINY.feature_width)
        assert torch.allclose(output.top_attention[row, -1], top, atol=1e-6)
        expected = model.answer_head(question[row : row + 1], state.memory)
        assert torch.allclose(output.answer_logits[row], expected[0], atol=1e-5)


def test_without_features_only_the_controller_runs():
    tokens, lengths, _ = tiny_batch()
    output = build()(tokens, lengths)
    assert output.module_logits.shape == (4, TINY.num_steps, len(MODULE_NAMES))
    assert output.answer_logits is None and output.cell_scores is None


def test_float16_features_as_stored_are_accepted():
    tokens, lengths, features = tiny_batch()
    model = build()
    a = model(tokens, lengths, features.half())
    b = model(tokens, lengths, features.half().float())
    assert torch.equal(a.answer_logits, b.answer_logits)


def test_bad_config_values_are_rejected_by_name():
    with pytest.raises(ValueError, match="model.pointer_sharpen"):
        ModelConfig(pointer_sharpen="sharp")
    with pytest.raises(ValueError, match="model.task"):
        ModelConfig(task="captioning")
    with pytest.raises(ValueError, match="model.vocab_size"):
        SNMN(ModelConfig())
    with pytest.raises(ValueError, match="grid"):
        build()(*tiny_batch()[:2], torch.zeros(4, 5, 5, TINY.feature_dim))
