"""Per-example scores (memorization/studies/scores/): the estimators against answers worked out by
hand from Feldman & Zhang's and Jiang et al.'s definitions, their limits, the AUROC against a
brute-force count, and the subset masks' reproducibility."""

from __future__ import annotations

import math

import pytest
import torch

from memorization.studies.scores.estimator import auroc, cscores, memorization
from memorization.studies.scores.masks import model_seed, subset_masks, subset_size


def test_a_family_that_is_right_exactly_when_it_trained_on_the_example():
    """correct == included: acc_in 1, acc_out 0, so mem = 1 with no spread, and every C-score
    (accuracy of the models that left it out) 0."""
    included = subset_masks(50, 0.5, seed=0, models=range(40))
    s = memorization(included, included)
    assert torch.equal(s.mem, torch.ones(50, dtype=torch.float64))
    assert torch.equal(s.mem_se, torch.zeros(50, dtype=torch.float64))
    assert torch.equal(s.n_in + s.n_out, torch.full((50,), 40.0, dtype=torch.float64))
    c = cscores(included, included, torch.full((40,), 0.5), [0.5])[0.5]
    assert torch.equal(c, torch.zeros(50, dtype=torch.float64))


def test_estimates_worked_out_by_hand():
    # 4 models x 3 examples. Example 0: in models 0, 1 (right, wrong), out of 2, 3 (right,
    # right): acc_in 1/2, acc_out 1, mem -1/2, se sqrt(1/2 * 1/2 / 2 + 0) = 0.35355.
    # Example 1: in 1, 2, 3 (right, right, wrong), out of 0 (wrong): acc_in 2/3, acc_out 0,
    # mem 2/3, se sqrt(2/3 * 1/3 / 3) = 0.27217. Example 2: in every model: acc_out and mem NaN.
    included = torch.tensor([[1, 0, 1], [1, 1, 1], [0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    correct = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    s = memorization(included, correct)
    assert s.n_in.tolist() == [2, 3, 4] and s.n_out.tolist() == [2, 1, 0]
    assert s.acc_in[:2].tolist() == pytest.approx([0.5, 2 / 3])
    assert s.acc_out[:2].tolist() == [1.0, 0.0]
    assert s.mem[:2].tolist() == pytest.approx([-0.5, 2 / 3])
    assert s.mem_se[:2].tolist() == pytest.approx([math.sqrt(0.125), math.sqrt(2 / 27)])
    assert s.acc_in[2] == pytest.approx(0.75) and math.isnan(s.acc_out[2])
    assert math.isnan(s.mem[2]) and math.isnan(s.mem_se[2])


def test_cscores_per_ratio_and_on_a_test_set():
    # models 0, 1 at ratio 0.25, models 2, 3 at 0.75; one training example
    included = torch.tensor([[0], [1], [0], [0]], dtype=torch.bool)
    correct = torch.tensor([[1], [1], [0], [1]], dtype=torch.bool)
    ratios = torch.tensor([0.25, 0.25, 0.75, 0.75])
    c = cscores(included, correct, ratios, [0.25, 0.75])
    assert c[0.25].tolist() == [1.0]  # model 1 trained on it: only model 0 counts
    assert c[0.75].tolist() == [0.5]
    test = cscores(None, correct, ratios, [0.25, 0.75])  # a test example: every model counts
    assert test[0.25].tolist() == [1.0] and test[0.75].tolist() == [0.5]
    assert math.isnan(cscores(included, correct, ratios, [0.5])[0.5][0])  # no such model


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"must both be \[models, examples\]"):
        memorization(torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 5, dtype=torch.bool))


def test_auroc_by_hand_and_against_every_pair():
    # positives 0.9, 0.5; negatives 0.1, 0.5: pairs 1 + 1 + 1 + 1/2 = 3.5 of 4
    assert auroc(torch.tensor([0.9, 0.1, 0.5, 0.5]), torch.tensor([1, 0, 1, 0])) == 0.875
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = torch.randint(0, 6, (40,), generator=g).double()  # many ties
        pos = torch.rand(40, generator=g) < 0.3
        wins = (s[pos][:, None] > s[~pos][None, :]).double() + \
            0.5 * (s[pos][:, None] == s[~pos][None, :]).double()
        assert auroc(s, pos) == pytest.approx(float(wins.mean()))
        assert auroc(-s, pos) == pytest.approx(1 - float(wins.mean()))  # order reversed
        assert auroc(s.exp(), pos) == pytest.approx(float(wins.mean()))  # monotone: same


def test_auroc_leaves_nan_out_and_needs_both_classes():
    assert auroc(torch.tensor([1.0, float("nan"), 0.0]), torch.tensor([1, 1, 0])) == 1.0
    assert math.isnan(auroc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1])))


def test_masks_are_reproducible_exact_and_independent_of_the_chunk():
    a = subset_masks(1000, 0.7, seed=3, models=range(10))
    assert torch.equal(a, subset_masks(1000, 0.7, seed=3, models=range(10)))
    assert (a.sum(1) == subset_size(1000, 0.7)).all() and subset_size(1000, 0.7) == 700
    # model 7 draws the same subset whether its chunk is 0-9 or 7 alone
    assert torch.equal(a[7], subset_masks(1000, 0.7, seed=3, models=[7])[0])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], subset_masks(1000, 0.7, seed=4, models=[0])[0])
    assert model_seed(0, 1) != model_seed(1, 0)


def test_masks_include_every_example_at_the_ratio():
    """Over 2,000 models each of 50 examples is included in about 30% of them (binomial
    sd 1%: within 5 sd)."""
    frac = subset_masks(50, 0.3, seed=0, models=range(2000)).double().mean(0)
    assert (frac - 0.3).abs().max() < 0.05


def test_subset_ratio_must_leave_examples_in_and_out():
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        subset_size(10, 1.0)
    assert subset_size(10, 0.01) == 1 and subset_size(10, 0.99) == 9


def _chunk(models: list[int], n: int = 6, t: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    m = len(models)
    return {"models": torch.tensor(models), "ratios": torch.full((m,), 0.5),
            "included": subset_masks(n, 0.5, 0, models),
            "pred_train": torch.randint(0, 3, (m, n), generator=g, dtype=torch.int16),
            "pred_test": torch.randint(0, 3, (m, t), generator=g, dtype=torch.int16)}


def test_chunks_land_whole_and_a_rerun_trains_what_no_chunk_holds(tmp_path):
    from memorization.studies.scores.chunks import (
        chunk_path,
        landed,
        load_chunks,
        next_index,
        plan,
        save_chunk,
    )

    assert load_chunks(tmp_path) is None and next_index(tmp_path) == 0
    a, c = _chunk([0, 1]), _chunk([4, 5], seed=1)
    save_chunk(tmp_path, 0, **a)
    save_chunk(tmp_path, 2, **c)
    # a half-written chunk (the temporary file of a killed writer) does not count
    (chunk_path(tmp_path, 1).parent / ".chunk_0001.npz.123.ab.tmp.npz").write_bytes(b"x")
    assert landed(tmp_path) == [0, 2] and next_index(tmp_path) == 3
    got = load_chunks(tmp_path)
    assert got.count == 4 and got.models.tolist() == [0, 1, 4, 5]
    assert got.chunk.tolist() == [0, 0, 2, 2]
    assert torch.equal(got.included, torch.cat([a["included"], c["included"]]))
    assert torch.equal(got.pred_test, torch.cat([a["pred_test"], c["pred_test"]]))
    todo = [k for k in range(8) if k not in set(got.models.tolist())]
    assert plan(todo, lambda k: 0.5, 3) == [[2, 3, 6], [7]]
    save_chunk(tmp_path, 3, **_chunk([2]))
    save_chunk(tmp_path, 4, **_chunk([2]))
    with pytest.raises(ValueError, match="model 2 is in two chunks"):
        load_chunks(tmp_path)


def test_plan_gives_each_chunk_one_ratio_and_lets_the_ratios_take_turns():
    from memorization.studies.scores.chunks import plan

    ratios = [0.3, 0.7]
    chunks = plan(list(range(10)), lambda k: ratios[k % 2], 2)
    assert chunks == [[0, 2], [1, 3], [4, 6], [5, 7], [8], [9]]
    assert sorted(k for c in chunks for k in c) == list(range(10))


def test_a_chunk_of_another_job_is_named(tmp_path):
    from memorization.studies.scores.chunks import load_chunks, save_chunk

    save_chunk(tmp_path, 0, **_chunk([0]))
    save_chunk(tmp_path, 1, **_chunk([1], n=7))
    with pytest.raises(ValueError, match="chunk_0001.npz has 7 training"):
        load_chunks(tmp_path)
    with pytest.raises(ValueError, match="one row per model"):
        save_chunk(tmp_path, 2, **{**_chunk([2]), "ratios": torch.zeros(2)})
