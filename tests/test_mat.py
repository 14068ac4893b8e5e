"""Known answers for MAT's shift and loss."""
import math

import pytest
import torch
import torch.nn.functional as F

from memaware.methods.mat import MATLoss, calibration_matrix, mat_shift


def test_perfect_heldout_predictor_at_small_tau_gives_log_p_y_given_heldout_class():
    # held-out class k_i (a perfect predictor of the attribute); labels agree with it 3 times in 4
    k = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    logits = 10.0 * F.one_hot(k, 2).float()
    shift = mat_shift(logits, y, 2, tau=0.001)
    expected = torch.log(torch.tensor([[0.75, 0.25], [0.25, 0.75]]))[k]
    assert torch.allclose(shift, expected, atol=1e-6)


def test_calibrated_rows_sum_to_one_including_a_class_never_predicted():
    q = torch.softmax(torch.randn(50, 3), 1)
    q[:, 2] = 0.0  # held-out class 2 has no mass at all
    q = q / q.sum(1, keepdim=True)
    y = torch.randint(0, 3, (50,))
    c = calibration_matrix(q, y, 3)
    assert torch.allclose(c.sum(1), torch.ones(3))
    assert torch.allclose(c[2], torch.full((3,), 1 / 3))


def test_uniform_heldout_logits_give_a_constant_shift_per_class_equal_to_log_prior():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    shift = mat_shift(torch.zeros(10, 3), y, 3, tau=0.1)
    prior = torch.tensor([0.6, 0.3, 0.1])
    assert torch.allclose(shift, torch.log(prior + 1e-8).expand(10, 3), atol=1e-6)


@pytest.mark.parametrize("calibration", ["global", "batch"])
def test_no_nan_with_tiny_tau_and_a_class_absent_from_the_batch(calibration):
    torch.manual_seed(0)
    heldout = 50 * torch.randn(40, 3)
    y = torch.randint(0, 3, (40,))
    loss_fn = MATLoss(heldout, y, tau=0.001, calibration=calibration)
    idx = torch.nonzero(y != 2).squeeze(1)[:8]  # no example of class 2 in this batch
    logits = torch.randn(len(idx), 3, requires_grad=True)
    loss = loss_fn(logits, y[idx], idx)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_no_gradient_flows_through_the_shift():
    heldout = torch.randn(10, 2, requires_grad=True)
    y = torch.randint(0, 2, (10,))
    loss_fn = MATLoss(heldout, y, tau=0.1)
    assert not loss_fn.shift.requires_grad
    logits = torch.randn(10, 2, requires_grad=True)
    loss_fn(logits, y, torch.arange(10)).backward()
    assert heldout.grad is None


def test_loss_equals_cross_entropy_of_shifted_logits():
    torch.manual_seed(1)
    heldout, y, logits = torch.randn(6, 2), torch.tensor([0, 1, 0, 1, 1, 0]), torch.randn(6, 2)
    loss = MATLoss(heldout, y, tau=0.5)(logits, y, torch.arange(6))
    expected = F.cross_entropy(logits + mat_shift(heldout, y, 2, 0.5), y)
    assert math.isclose(float(loss), float(expected), rel_tol=1e-6)


def test_shift_shrinks_the_gradient_of_examples_the_heldout_model_explains():
    # held-out class 0 for examples 0-3 (labels 0,0,0,1), class 1 for 4-7 (labels 1,1,1,0):
    # p(y | held-out class) = 3/4 for the explained examples, 1/4 for the contradicting ones
    heldout = torch.tensor([[9.0, -9.0]] * 4 + [[-9.0, 9.0]] * 4)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])
    loss_fn = MATLoss(heldout, y, tau=1.0)
    logits = torch.zeros(8, 2, requires_grad=True)
    (loss_fn(logits, y, torch.arange(8)) * 8).backward()
    # gradient of cross-entropy w.r.t. a logit is |softmax - onehot|: 1/4 when explained, 3/4 when not
    assert torch.allclose(logits.grad[0].abs(), torch.tensor([0.25, 0.25]), atol=1e-4)
    assert torch.allclose(logits.grad[3].abs(), torch.tensor([0.75, 0.75]), atol=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="calibration"):
        MATLoss(torch.zeros(2, 2), torch.tensor([0, 1]), calibration="minibatch")
    with pytest.raises(ValueError, match="tau"):
        MATLoss(torch.zeros(2, 2), torch.tensor([0, 1]), tau=0.0)
