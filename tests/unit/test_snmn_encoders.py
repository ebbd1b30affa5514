"""Text encoder (lengths honoured), positional encoding and knowledge base, controller."""

import math

import torch

from snmn.controller import LayoutController
from snmn.kb import KnowledgeBase, positional_encoding
from snmn.text_encoder import TextEncoder, reverse_within_length


def test_reverse_within_length_keeps_padding_in_place():
    sequence = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    reversed_ = reverse_within_length(sequence, torch.tensor([4, 2]))
    assert reversed_.tolist() == [[4, 3, 2, 1], [6, 5, 0, 0]]


def test_bilstm_equals_running_each_question_alone():
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=15, embed_dim=6, lstm_dim=10).double()
    tokens = torch.randint(0, 15, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    embeddings, states, question = encoder(tokens, lengths)
    for row, length in enumerate(lengths.tolist()):
        words = encoder.embedding(tokens[row : row + 1, :length])  # [1, len, E]
        forward, _ = encoder.forward_lstm(words)
        backward, _ = encoder.backward_lstm(words.flip(1))
        expected = torch.cat([forward, backward.flip(1)], dim=2)[0]
        assert torch.allclose(states[row, :length], expected, atol=1e-12)
        assert states[row, length:].abs().sum() == 0  # padding states are zero
        assert torch.allclose(question[row], torch.cat([forward[0, -1], backward[0, -1]]))


def test_lstm_is_sized_like_tensorflow_basic_lstm_cell():
    encoder = TextEncoder(vocab_size=5, embed_dim=300, lstm_dim=512)
    lstm = encoder.forward_lstm
    assert lstm.hidden_size == 256
    assert torch.all(lstm.bias_ih_l0[256:512] == 1.0)  # TF forget_bias
    assert not lstm.bias_hh_l0.requires_grad and lstm.bias_hh_l0.abs().sum() == 0
    assert math.isclose(encoder.embedding.weight.std().item(), math.sqrt(1 / 300), rel_tol=0.05)


def test_positional_encoding_follows_the_official_formula_and_order():
    code = positional_encoding(14, 14, 128)  # [H, W, 128]
    periods = 10000.0 ** torch.linspace(0, 1, 32, dtype=torch.float64)
    h, w = 2, 5
    assert torch.allclose(code[h, w, 0:32].double(), torch.sin(h / periods), atol=1e-6)
    assert torch.allclose(code[h, w, 32:64].double(), torch.cos(h / periods), atol=1e-6)
    assert torch.allclose(code[h, w, 64:96].double(), torch.sin(w / periods), atol=1e-6)
    assert torch.allclose(code[h, w, 96:128].double(), torch.cos(w / periods), atol=1e-6)


def test_knowledge_base_is_two_convs_over_features_then_code():
    torch.manual_seed(0)
    kb = KnowledgeBase(feature_dim=16, pos_enc_dim=8, kb_dim=12, height=3, width=4).double()
    features = torch.randn(2, 3, 4, 16, dtype=torch.float64)
    code = positional_encoding(3, 4, 8).double().expand(2, -1, -1, -1)
    joined = torch.cat([features, code], dim=-1)
    expected = kb.conv2(torch.nn.functional.elu(kb.conv1(joined)))
    assert torch.allclose(kb(features), expected, atol=1e-12)


def test_controller_uses_a_separate_projection_per_step():
    torch.manual_seed(0)
    controller = LayoutController(num_steps=3, lstm_dim=8, embed_dim=5, num_modules=9)
    question = torch.randn(2, 8)
    blocks = controller.step_projection(question).view(2, 3, 8)
    for step in range(3):
        rows = slice(step * 8, (step + 1) * 8)
        weight = controller.step_projection.weight[rows]
        bias = controller.step_projection.bias[rows]
        assert torch.allclose(blocks[:, step], question @ weight.T + bias)
    assert controller.module_scores.bias is None  # bias-free module logits
    assert controller.initial_control.shape == (5,)


def test_controller_attends_over_word_embeddings():
    torch.manual_seed(0)
    controller = LayoutController(num_steps=2, lstm_dim=8, embed_dim=5, num_modules=9)
    states, embeddings = torch.randn(1, 4, 8), torch.randn(1, 4, 5)
    output = controller(torch.randn(1, 8), states, embeddings, torch.tensor([3]))
    expected = output.text_attention[:, 0, :, None].mul(embeddings).sum(1)
    assert torch.allclose(output.controls[:, 0], expected, atol=1e-6)
    assert output.text_attention[0, :, 3].abs().max() == 0
