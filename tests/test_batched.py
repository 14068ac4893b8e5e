"""The batched engine against the one-model path: same selected steps, same metrics, no leaks between runs."""
import math

import pytest
import torch

from memaware.data import make_figure1, make_multiclass
from memaware.errors import MemawareError
from memaware.heldout import xrm
from memaware.methods import REGISTRY, create
from memaware.sweep.experiment import load_experiment
from memaware.sweep.runner import run_sweep
from memaware.train import TrainConfig, fit
from memaware.heldout.xrm import XRMTwins, build_twins
from memaware.train import batched
from memaware.train.batched import fit_many, train_stack, xrm_many
from memaware.train.loop import evaluate, evaluate_logits

TINY = "experiments/tiny.yaml"
PROBLEMS = {"figure1-linear": ("linear", "sgd"), "multiclass3-mlp": ("mlp", "sgd")}
# each run its own learning rate, weight decay, momentum, batch size (full batch included) and seed
OWN = [{"lr": 0.05, "weight_decay": 1e-3, "batch_size": 16, "seed": 0},
       {"lr": 0.01, "weight_decay": 0.0, "batch_size": 40, "seed": 1, "momentum": 0.5},
       {"lr": 0.1, "weight_decay": 1e-4, "batch_size": None, "seed": 2}]


@pytest.fixture(scope="module")
def problems(device):
    out = {}
    for key, (arch, optimizer) in PROBLEMS.items():
        data = make_figure1(n=80, d=20, seed=0) if arch == "linear" else make_multiclass(n=90, n_classes=3, d=24, seed=0)
        base = TrainConfig(steps=40, checkpoint_freq=10, arch=arch, hidden=[8], optimizer=optimizer, device=device,
                           lr_schedule="linear" if arch == "mlp" else "constant")
        out[key] = (data, base, xrm(data, base.model_copy(update={"steps": 30, "batch_size": 32})))
    return out


def configs(base: TrainConfig, own=OWN) -> list[TrainConfig]:
    return [base.model_copy(update=o) for o in own]


BATCHED = sorted(n for n in REGISTRY if create(n).batchable(TrainConfig()))


def assert_same_run(single, batched):
    """Same evaluation steps, same selected step per criterion, every metric within float tolerance."""
    assert [r["step"] for r in single.history] == [r["step"] for r in batched.history]
    assert {c: r["step"] for c, r in single.best.items()} == {c: r["step"] for c, r in batched.best.items()}
    for a, b in zip(single.history, batched.history):
        assert_close(a, b)
    for (ka, va), (kb, vb) in zip(single.model.state_dict().items(), batched.model.state_dict().items()):
        assert ka == kb and torch.allclose(va, vb, atol=1e-4)
    for criterion, state in single.best_states.items():  # the weights of each selected step
        assert state.keys() == batched.best_states[criterion].keys()
        assert all(torch.allclose(v, batched.best_states[criterion][k], atol=1e-4) for k, v in state.items())


def assert_close(a, b, path="record"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and not math.isnan(a):
        assert b == pytest.approx(a, abs=1e-3), path  # AUROC: one near-tie of the probabilities
    else:
        assert (a == b) or (a != a and b != b), path


def test_the_paper_methods_and_the_group_baselines_batch():
    for arch in ("linear", "mlp"):
        names = {n for n in REGISTRY if create(n).batchable(TrainConfig(arch=arch))}
        assert {"erm", "mat", "groupdro", "xrm+groupdro", "rwg", "subg", "jtt", "logit-adjustment"} <= names
    assert not create("mat", calibration="batch").batchable(TrainConfig())
    assert not create("lff").batchable(TrainConfig()) and not create("dfr").batchable(TrainConfig(arch="mlp"))


BATCHED_CASES = [(name, key) for key, (arch, _) in PROBLEMS.items() for name in BATCHED
                 if create(name).batchable(TrainConfig(arch=arch))]


@pytest.mark.parametrize("name, key", BATCHED_CASES, ids=[f"{name}-{key}" for name, key in BATCHED_CASES])
def test_every_batched_method_matches_the_one_model_path(problems, name, key):
    data, base, heldout = problems[key]
    runs = configs(base)
    singles = [fit(data, create(name), c, heldout=heldout) for c in runs]
    for single, batched in zip(singles, fit_many(data, [create(name) for _ in runs], runs, heldout)):
        assert_same_run(single, batched)


def test_a_uniform_samplers_blocks_are_its_batches_with_the_draws_in_the_same_order():
    from memaware.methods import UniformSampler

    for batch_size, pool in [(7, None), (7, torch.arange(3, 40, 2)), (None, None), (50, None)]:
        one, blocked = (UniformSampler(50, batch_size, torch.Generator().manual_seed(1), pool) for _ in range(2))
        steps = []
        for _ in range(23):  # the one-model path: a batch, then the method's draws for it
            batch = next(one)
            steps.append((batch, torch.rand(len(batch), generator=one.generator)))
        blocks = [(block, torch.rand(block.numel(), generator=blocked.generator).view(block.shape))
                  for block in blocked.blocks(23)]
        assert torch.equal(torch.stack([b for b, _ in steps]), torch.cat([b for b, _ in blocks]))
        assert torch.equal(torch.stack([d for _, d in steps]), torch.cat([d for _, d in blocks]))
        assert len(blocks) > 1 or batch_size in (None, 50)


@pytest.mark.parametrize("key", PROBLEMS)
def test_runs_of_one_batch_size_match_the_one_model_path(problems, key):
    data, base, heldout = problems[key]
    runs = configs(base, [{**o, "batch_size": 24} for o in OWN])  # no padding: one batched product on a CPU
    for name in ("erm", "mat", "groupdro"):
        for single, batched in zip([fit(data, create(name), c, heldout=heldout) for c in runs],
                                   fit_many(data, [create(name) for _ in runs], runs, heldout)):
            assert_same_run(single, batched)
    runs = [base.model_copy(update={"steps": 30, "batch_size": 24, "seed": s}) for s in range(3)]
    for single, batched in zip([xrm(data, c) for c in runs], xrm_many(data, runs)):
        assert single.flip_rate == batched.flip_rate
        assert all(torch.equal(single.inferred[s], batched.inferred[s]) for s in single.inferred)


@pytest.mark.parametrize("key", PROBLEMS)
def test_batches_padded_beyond_every_runs_own_rows_match_the_one_model_path(problems, key, monkeypatch):
    """On a GPU a narrow stack's batches get rows of weight 0 (batch_rows): methods and XRM's flips ignore them."""
    monkeypatch.setattr(batched, "batch_rows", lambda stack, device: 64)
    data, base, heldout = problems[key]
    runs = configs(base)
    for name in ("erm", "mat", "groupdro", "xrm+groupdro", "jtt"):
        for single, stacked in zip([fit(data, create(name), c, heldout=heldout) for c in runs],
                                   fit_many(data, [create(name) for _ in runs], runs, heldout)):
            assert_same_run(single, stacked)
    runs = [base.model_copy(update={"steps": 30, "batch_size": b, "seed": s}) for s, b in enumerate((16, 40))]
    for single, stacked in zip([xrm(data, c) for c in runs], xrm_many(data, runs)):
        assert single.flip_rate == stacked.flip_rate
        assert all(torch.equal(single.inferred[s], stacked.inferred[s]) for s in single.inferred)


def test_a_gpu_pads_narrow_products_only():
    stack = batched.StackedModels([[[torch.nn.Linear(20, 2)]] for _ in range(10)])  # 10 models x 2 outputs
    rows = batched.batch_rows(stack, "cuda")
    assert batched.batch_rows(stack, "cpu") == 1 and rows * 20 >= batched.NARROW_PRODUCT > (rows - 1) * 20


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_with_their_own_settings_match_torch_optim(problems, optimizer):
    data, base, heldout = problems["multiclass3-mlp"]
    runs = configs(base.model_copy(update={"optimizer": optimizer}), OWN[:2])  # Adam amplifies noise on a full batch
    for name in ("erm", "mat"):
        for single, batched in zip([fit(data, create(name), c, heldout=heldout) for c in runs],
                                   fit_many(data, [create(name) for _ in runs], runs, heldout)):
            assert_same_run(single, batched)


def test_method_hyperparameters_and_state_are_each_runs_own(problems):
    data, base, heldout = problems["figure1-linear"]
    for name, values in [("mat", [0.001, 0.1, 1.0]), ("groupdro", [0.001, 0.3, 3.0])]:
        key = "tau" if name == "mat" else "eta"
        runs = configs(base)
        methods = [create(name, **{key: v}) for v in values]
        batched = fit_many(data, methods, runs, heldout)
        for v, c, b, m in zip(values, runs, batched, methods):
            single_method = create(name, **{key: v})
            assert_same_run(fit(data, single_method, c, heldout=heldout), b)
            for k, state in single_method.state_dict().items():  # GroupDRO's group weights, written back
                assert torch.allclose(state, m.state_dict()[k], atol=1e-5)


def test_no_run_leaks_into_another_and_a_diverging_run_fails_alone(problems):
    data, base, heldout = problems["figure1-linear"]
    runs = configs(base)
    alone = fit_many(data, [create("groupdro")], runs[1:2], heldout)[0]
    diverging = base.model_copy(update={"lr": 1e30, "seed": 5})
    crowded = fit_many(data, [create("groupdro", eta=e) for e in (1e6, 0.01, 0.5)], [diverging, runs[1], runs[2]],
                       heldout)
    with pytest.raises(MemawareError) as single_error:
        fit(data, create("groupdro", eta=1e6), diverging, heldout=heldout)
    assert isinstance(crowded[0], MemawareError) and str(crowded[0]) == str(single_error.value)
    assert "loss became nan" in str(crowded[0])
    assert_same_run(alone, crowded[1])  # same run, other neighbours (one diverging): same results
    reordered = fit_many(data, [create("groupdro", eta=e) for e in (0.5, 0.01)], [runs[2], runs[1]], heldout)
    assert_same_run(crowded[1], reordered[1])
    assert_same_run(crowded[2], reordered[0])


@pytest.mark.parametrize("key", PROBLEMS)
def test_xrm_runs_stacked_match_xrm_one_at_a_time(problems, key):
    data, base, _ = problems[key]
    runs = [base.model_copy(update={"steps": 30, "batch_size": b, "seed": s}) for b, s in [(32, 0), (16, 1), (None, 2)]]
    for single, batched in zip([xrm(data, c) for c in runs], xrm_many(data, runs)):
        assert single.flip_rate == batched.flip_rate and single.info == batched.info
        assert single.degenerate == batched.degenerate
        assert all(torch.equal(single.inferred[s], batched.inferred[s]) for s in single.inferred)
        assert torch.allclose(single.logits, batched.logits, atol=1e-4)


def test_the_sweep_gives_the_same_results_with_either_engine(tmp_path, capsys):
    exp = load_experiment(TINY, ["methods=[erm, mat, xrm+groupdro, lff]", "search.seeds=[0, 1]"])
    batched = run_sweep(exp, tmp_path / "batched")
    assert "batched engine: lff on figure1 trains one run at a time" in capsys.readouterr().err
    single = run_sweep(exp, tmp_path / "single", engine="single")
    assert "batched engine" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "batched" / "runs").iterdir()) == \
        sorted(p.name for p in (tmp_path / "single" / "runs").iterdir())
    assert batched["phase1"] == single["phase1"]
    for a, b in zip(batched["results"], single["results"]):
        assert (a["method"], a["criterion"], a["combination"]) == (b["method"], b["criterion"], b["combination"])
        assert [r["step"] for r in a["runs"]] == [r["step"] for r in b["runs"]]
        for ra, rb in zip(a["runs"], b["runs"]):
            assert {k: v for k, v in ra.items() if k != "key"} == pytest.approx(
                {k: v for k, v in rb.items() if k != "key"}, abs=1e-4)


def test_a_sweep_keeps_one_data_sets_splits_on_the_device_from_stack_to_stack():
    from memaware.sweep.runner import DataCache

    cache, small, other = DataCache(), {"n": 200, "d": 30}, {"n": 100, "d": 30}
    first = cache.splits("figure1", small, "cpu")
    assert cache.splits("figure1", small, "cpu") is first and len(first["train"]) == 200
    assert len(cache.splits("figure1", other, "cpu")["train"]) == 100
    assert cache.splits("figure1", small, "cpu") is not first  # one data set's splits at a time


def test_a_bad_engine_is_one_line_naming_the_setting(tmp_path):
    with pytest.raises(MemawareError, match="train: engine must be one of batched, single, got 'fast'"):
        load_experiment(TINY, ["train.engine=fast"])
    exp = load_experiment(TINY, ["datasets.0.train.engine=single"])
    assert exp.engine(exp.datasets[0]) == "single" and exp.engine(exp.datasets[0], "batched") == "batched"
    assert "engine" not in exp.base_train(exp.datasets[0])


def test_runs_that_cannot_stack_fall_back_to_the_one_model_path(problems, tmp_path, monkeypatch, capsys):
    from torch import nn

    from memaware.train import batched

    data, base, _ = problems["figure1-linear"]
    tanh = nn.Sequential(nn.Linear(data.n_features, 4), nn.Tanh(), nn.Linear(4, data.n_classes))
    with pytest.raises(batched.NotStackable, match="stacks Linear and ReLU layers only"):
        batched.train_stack(data, [create("erm")], [base], modules=[tanh])
    with pytest.raises(batched.NotStackable, match="does not clip each run's gradients"):
        batched.train_stack(data, [create("erm")], [base.model_copy(update={"grad_clip": 1.0})])

    def refuse(*args, **kwargs):
        raise batched.NotStackable("streamed inputs")

    exp = load_experiment(TINY, ["methods=[erm, mat]", "search.seeds=[0]"])
    monkeypatch.setattr(batched, "fit_many", refuse)
    fallen = run_sweep(exp, tmp_path / "fallen")
    assert "batched engine: figure1 trains one run at a time (streamed inputs)" in capsys.readouterr().err
    single = run_sweep(exp, tmp_path / "single", engine="single")
    assert [r["runs"] for r in fallen["results"]] == [r["runs"] for r in single["results"]]


def test_metrics_computed_for_all_models_at_once_equal_each_models_evaluation(problems):
    from dataclasses import replace

    from torch import nn

    from memaware.data.dataset import SPLITS

    g = torch.Generator().manual_seed(0)
    for key in PROBLEMS:
        data, _, heldout = problems[key]
        splits = {s: data.get(s) for s in SPLITS}
        n = len(splits["val"])
        splits["val"] = replace(splits["val"], attributes=torch.randint(0, 2, (n, 2), generator=g),
                                attribute_names=("p", "q"))  # overlapping attributes too
        logits = {s: torch.randn(4, len(split), data.n_classes, generator=g).round(decimals=1)  # ties
                  for s, split in splits.items()}
        logits["test"][1] = 0  # one model predicts the same for every example
        stacked = evaluate_logits(logits, splits, heldout.inferred)
        for m, record in enumerate(stacked):
            own = {s: replace(split, x=logits[s][m]) for s, split in splits.items()}
            assert record == evaluate(nn.Identity(), own, heldout.inferred)
        assert "overlap_wga" in stacked[0]["val"] and "gi_wga" in stacked[0]["test"]


GRAPHED = ["erm", "mat", "groupdro", "xrm+groupdro", "focal"]


def rerun(compute):
    """record_cuda_graph's stand-in on any device: each replay runs `compute` again and writes its outputs
    into the first replay's tensors, as each replay of a CUDA graph overwrites the graph's outputs."""
    first = []

    def replay():
        outputs = compute()
        if not first:
            first.append(outputs)
        for mine, new in zip(leaves(first[0]), leaves(outputs)):
            mine.copy_(new)
        return first[0]

    return replay


def leaves(outputs) -> list:
    return list(outputs.values()) if isinstance(outputs, dict) else list(outputs)


def recorders(device) -> list:
    """The recordings to test against eager steps: CUDA graphs on a GPU, their stand-in everywhere."""
    return [rerun] + ([True] if device.startswith("cuda") else [])


@pytest.mark.parametrize("name", GRAPHED)
def test_steps_and_evaluations_replayed_from_a_recording_match_eager_ones(problems, name, device, monkeypatch):
    """Each replayed step reads its batch at the sampler's position on the device: chunks of a few steps
    make the sampler refill its buffers between replays."""
    monkeypatch.setattr(batched, "_CHUNK_ENTRIES", 7 * 3 * 40)  # 7 steps of 3 runs of up to 40 examples
    for record in recorders(device):
        for key in PROBLEMS:
            data, base, heldout = problems[key]
            runs = configs(base)
            replayed, eager = (train_stack(data, [create(name) for _ in runs], runs, heldout, graphs=g).outcomes
                               for g in (record, False))
            for a, b in zip(eager, replayed):
                assert_same_run(a, b)


def test_xrm_label_flips_replayed_from_a_recording_match_eager_ones(problems, device):
    data, base, _ = problems["figure1-linear"]
    runs = [base.model_copy(update={"steps": 30, "batch_size": b, "seed": s}) for b, s in [(32, 0), (16, 1)]]
    for record in recorders(device):
        twins = {}
        for g in (record, False):
            twins[g] = [XRMTwins() for _ in runs]
            train_stack(data, twins[g], runs, modules=[build_twins(data, c) for c in runs], evaluate_splits=False,
                        graphs=g)
        for a, b in zip(twins[record], twins[False]):
            assert a.state_dict().keys() == b.state_dict().keys()
            assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
