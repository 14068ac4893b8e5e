"""XRM's pieces: flip probability, class-balanced loss, cross-mistake groups, degenerate runs."""
import copy

import torch
import torch.nn.functional as F

from memaware.data import make_figure1
from memaware.heldout import HeldOut, from_logits, is_degenerate, select_xrm_run
from memaware.heldout.xrm import class_balanced_loss, flip_probability


def test_flip_probability_is_rescaled_confidence():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.75, 0.25], [1e-12, 1.0]]))
    prob, pred = flip_probability(logits)
    assert torch.allclose(prob, torch.tensor([0.0, 0.5, 1.0]), atol=1e-6)
    assert pred.tolist()[1:] == [0, 1]
    prob3, pred3 = flip_probability(torch.log(torch.tensor([[0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]])))
    assert torch.allclose(prob3, torch.tensor([(0.6 - 1 / 3) * 1.5, 0.0]), atol=1e-6)
    assert pred3[0] == 0


def test_class_balanced_loss_sums_per_class_means():
    logits = torch.randn(5, 2)
    labels = torch.tensor([0, 0, 0, 0, 1])
    per = F.cross_entropy(logits, labels, reduction="none")
    expected = per[:4].mean() + per[4]
    assert torch.allclose(class_balanced_loss(logits, labels, 2), expected)


def test_user_logits_infer_cross_mistake_groups():
    ds = make_figure1(n=20, d=4, seed=0)
    y = torch.as_tensor(ds.y[ds.mask("train")])
    logits = F.one_hot(y, 2).float()
    logits[:3] = F.one_hot(1 - y[:3], 2).float()  # three mistakes
    held = from_logits(ds, logits)
    assert held.inferred["train"].tolist() == [1, 1, 1] + [0] * 17


def test_degenerate_when_a_class_has_a_single_inferred_group():
    y = {"train": torch.tensor([0, 0, 1, 1]), "val": torch.tensor([0, 0, 1, 1])}
    good = {"train": torch.tensor([0, 1, 0, 1]), "val": torch.tensor([0, 1, 0, 1])}
    bad_val = {"train": torch.tensor([0, 1, 0, 1]), "val": torch.tensor([0, 1, 0, 0])}
    assert not is_degenerate(y, good, 2)
    assert is_degenerate(y, bad_val, 2)


def test_selection_takes_highest_flip_rate_among_non_degenerate_runs():
    runs = [HeldOut(torch.zeros(1, 2), flip_rate=0.3, degenerate=True),
            HeldOut(torch.zeros(1, 2), flip_rate=0.1),
            HeldOut(torch.zeros(1, 2), flip_rate=0.2)]
    assert select_xrm_run(runs) is runs[2]


def test_heldout_round_trips_through_npz(tmp_path):
    held = HeldOut(torch.randn(5, 2), {"train": torch.tensor([0, 1, 0, 0, 1])}, "xrm", 0.25, False, {"k": 1})
    held.save(tmp_path / "h.npz")
    back = HeldOut.load(tmp_path / "h.npz")
    assert torch.equal(back.logits, held.logits) and torch.equal(back.inferred["train"], held.inferred["train"])
    assert (back.source, back.flip_rate, back.info) == ("xrm", 0.25, {"k": 1})


def test_xrm_accepts_a_user_model_and_draws_its_twin_reproducibly():
    import memaware as mw

    data = make_figure1(n=80, d=10, seed=0)
    config = mw.TrainConfig(steps=20, checkpoint_freq=0, seed=3)
    model = torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    copies = [copy.deepcopy(model) for _ in range(2)]
    state = torch.get_rng_state()
    runs = [mw.xrm(data, config, model=m) for m in copies]
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched by the twin's initialisation
    assert runs[0].logits.shape == (80, 2)
    assert torch.equal(runs[0].logits, runs[1].logits)
