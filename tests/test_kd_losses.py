"""KD heads and losses: exact values on hand examples, masking of invalid frames, and that they can be learned."""

import pytest
import torch

from mt2kd_lib.models.kd_heads import (FrameKDHead, cosine_embedding_loss, frame_l1_loss, frame_stack_factor,
                                 make_kd_head, prob_bce_loss)


def test_stack_factor():
    assert frame_stack_factor(0.04, 0.02) == 2
    assert frame_stack_factor(0.04, 0.04) == 1
    with pytest.raises(ValueError, match="whole multiple"):
        frame_stack_factor(0.04, 0.03)


def test_frame_head_stacks_consecutive_teacher_frames():
    head = FrameKDHead(3, 2, stack=2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(4, 3))
        head.proj.bias.zero_()
    x = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    pred, lens = head(x, torch.tensor([2]))
    assert pred.shape == (1, 4, 2) and lens.tolist() == [4]
    # student frame 0 -> teacher frames 0,1 = [x0, x1], [x2, 0]
    assert pred[0, :2].tolist() == [[1.0, 2.0], [3.0, 0.0]]


def test_frame_l1_ignores_padding_and_length_mismatch():
    pred = torch.zeros(2, 5, 2)
    target = torch.ones(2, 4, 2)
    target[1, 2:] = 100.0  # beyond utterance 1's valid length: must not count
    loss = frame_l1_loss(pred, torch.tensor([5, 2]), target, torch.tensor([4, 3]))
    assert torch.allclose(loss, torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match="dim"):
        frame_l1_loss(pred, torch.tensor([5, 2]), torch.ones(2, 4, 3), torch.tensor([4, 3]))


def test_prob_bce_matches_formula():
    logits = torch.tensor([[0.0, 2.0]])
    probs = torch.tensor([[0.5, 0.25]])
    expected = -(0.5 * torch.log(torch.sigmoid(torch.tensor(0.0))) + 0.5 * torch.log(1 - torch.sigmoid(torch.tensor(0.0)))
                 + 0.25 * torch.log(torch.sigmoid(torch.tensor(2.0))) + 0.75 * torch.log(1 - torch.sigmoid(torch.tensor(2.0)))) / 2
    assert torch.allclose(prob_bce_loss(logits, probs), expected.reshape(1))


def test_cosine_loss_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
    assert torch.allclose(cosine_embedding_loss(a, b), torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("kind,teacher_dim", [("frame", 6), ("probabilities", 5), ("utterance", 4)])
def test_heads_learn_a_fixed_teacher(kind, teacher_dim):
    torch.manual_seed(0)
    n, t, c = 4, 7, 8
    x = torch.randn(n, t, c)
    lens = torch.tensor([7, 6, 5, 7])
    head = make_kd_head(kind, c, teacher_dim, stack=2)
    if kind == "frame":
        # A teacher the head can represent: a fixed linear map of the same ReLU features.
        target = (torch.relu(x) @ torch.randn(c, 2 * teacher_dim)).reshape(n, 2 * t, teacher_dim)
        loss_fn = lambda: frame_l1_loss(*head(x, lens), target, 2 * lens)  # noqa: E731
    elif kind == "probabilities":
        target = torch.sigmoid(x.mean(dim=1) @ torch.randn(c, teacher_dim))
        loss_fn = lambda: prob_bce_loss(head(x, lens), target)  # noqa: E731
    else:
        target = x.mean(dim=1) @ torch.randn(c, teacher_dim)
        loss_fn = lambda: cosine_embedding_loss(head(x, lens), target)  # noqa: E731
    # The best reachable loss: 0 for L1/cosine, the teachers' own entropy for BCE against soft labels.
    floor = prob_bce_loss(torch.logit(target), target).mean().item() if kind == "probabilities" else 0.0
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    first = loss_fn().mean().item() - floor
    for _ in range(150):
        opt.zero_grad()
        loss = loss_fn().mean()
        loss.backward()
        opt.step()
    assert loss.item() - floor < 0.5 * first
