"""Deferred gradients of products against a shared operand equal autograd's per-product ones."""

import pytest
import torch

from snmn.shared_products import SharedOperand

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gradients(shared_path: bool, sizes=(1, 2, 1)):
    """Loss over several products left_k @ (2·base), plus a direct use of the operand."""
    torch.manual_seed(0)
    base = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    lefts = [torch.randn(3, k, 5, dtype=torch.float64, requires_grad=True) for k in sizes]
    operand = base * 2
    if shared_path:
        shared = SharedOperand(operand)
        products = [shared.left_product(left) for left in lefts]
        direct = shared.tensor
    else:
        products = [torch.bmm(left, operand) for left in lefts]
        direct = operand
    # each product feeds the next left, as the stack feeds the next step's query
    loss = (direct.sin()).sum() + sum((p**2 * (i + 1)).sum() for i, p in enumerate(products))
    loss.backward()
    return base.grad, [left.grad for left in lefts]


def test_deferred_gradient_equals_autograd():
    shared, per_left = gradients(True)
    reference, reference_left = gradients(False)
    assert torch.allclose(shared, reference, rtol=0, atol=1e-12)
    for a, b in zip(per_left, reference_left, strict=True):
        assert torch.equal(a, b)


def test_products_only_still_reach_the_operand():
    base = torch.randn(2, 4, 3, requires_grad=True)
    left = torch.randn(2, 1, 4)
    shared = SharedOperand(base * 1.0)
    shared.left_product(left).sum().backward()
    # d/d base of Σ left @ base = leftᵀ · 1
    assert torch.allclose(base.grad, left.transpose(1, 2).expand(-1, -1, 3))


def test_a_second_backward_over_a_new_graph_starts_afresh():
    base = torch.randn(2, 4, 3, requires_grad=True)
    left = torch.randn(2, 1, 4)
    for _ in range(2):
        base.grad = None
        shared = SharedOperand(base * 1.0)
        shared.left_product(left).sum().backward()
        assert torch.allclose(base.grad, left.transpose(1, 2).expand(-1, -1, 3))


def test_without_gradients_it_is_a_plain_product():
    with torch.no_grad():
        base, left = torch.randn(2, 4, 3, requires_grad=True), torch.randn(2, 2, 4)
        shared = SharedOperand(base)
        assert torch.equal(shared.left_product(left), torch.bmm(left, base))


@pytest.mark.parametrize("backward", [True, False])
def test_an_operand_is_freed_by_reference_counting(backward):
    """No reference cycle through autograd: Python's collector would free it only at a full
    collection, thousands of steps later, and meanwhile every step's kb stayed in memory (the
    training workers grew by ~250 MB a minute)."""
    import gc
    import weakref

    gc.disable()
    try:
        base = torch.randn(2, 4, 3, requires_grad=True)
        shared = SharedOperand(base * 1.0)
        loss = shared.left_product(torch.randn(2, 1, 4, requires_grad=True)).sum()
        if backward:
            loss.backward()
        operand, tensor = weakref.ref(shared), weakref.ref(shared.tensor)
        del shared, loss
        assert operand() is None and tensor() is None
    finally:
        gc.enable()
