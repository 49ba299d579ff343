"""Ensemble combination rules on hand-made predictions: voting, weights, greedy selection, temperature scaling,
scores and disagreement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

from fmnist.ensemble.combine import (
    accuracy_weights,
    apply_temperature,
    disagreement,
    fit_combination,
    fit_temperature,
    greedy_selection,
    hard_vote,
    scores,
    soft_vote,
)
from fmnist.utils.errors import UserError


# --- combination rules on hand-made predictions -------------------------------------------------------------------
def test_soft_voting_is_the_mean_of_member_probabilities():
    logits = torch.randn(3, 40, 10, generator=torch.Generator().manual_seed(0)) * 3
    probs = [torch.softmax(member, dim=1) for member in logits]
    expected = (probs[0] + probs[1] + probs[2]) / 3
    assert torch.allclose(soft_vote(logits.log_softmax(-1)).exp(), expected, atol=1e-6)
    weighted = (1 * probs[0] + 2 * probs[1] + 1 * probs[2]) / 4
    assert torch.allclose(soft_vote(logits.log_softmax(-1), torch.tensor([1.0, 2.0, 1.0])).exp(), weighted, atol=1e-6)


def test_hard_voting_counts_votes_and_breaks_ties_by_mean_probability():
    members = torch.tensor(
        [
            [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]],
            [[0.2, 0.7, 0.1], [0.45, 0.5, 0.05], [0.1, 0.8, 0.1]],
            [[0.1, 0.8, 0.1], [0.3, 0.6, 0.1], [0.4, 0.35, 0.25]],
        ],
        dtype=torch.float64,
    ).log()  # votes per image: (0, 1, 1), (0, 1, 1), (2, 1, 0)
    shares = hard_vote(members).exp()
    assert torch.allclose(
        shares, torch.tensor([[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0], [1 / 3, 1 / 3, 1 / 3]]).double(), atol=1e-5
    )
    # image 3 is a three-way tie: the mean probabilities (0.6, 1.25, 1.15) / 3 decide for class 1
    assert hard_vote(members).argmax(1).tolist() == [1, 1, 1]
    # weighted: member 0 alone outweighs the other two
    assert hard_vote(members, torch.tensor([0.6, 0.2, 0.2])).argmax(1).tolist() == [0, 0, 2]
    two = members[:2]  # image 1: a 1-1 tie between class 0 (0.6 + 0.2) and class 1 (0.3 + 0.7) -> class 1
    assert hard_vote(two).argmax(1)[0].item() == 1


def test_validation_accuracy_weights():
    labels = torch.tensor([0, 1, 2, 0])
    onehot = lambda predictions: F.one_hot(torch.tensor(predictions), 3).double().clamp_min(1e-3).log()  # noqa: E731
    members = torch.stack([onehot([0, 1, 2, 0]), onehot([0, 1, 0, 1]), onehot([1, 1, 2, 2])])  # acc 1, 0.5, 0.5
    weights = accuracy_weights(members, labels)
    assert torch.allclose(weights, torch.tensor([0.5, 0.25, 0.25]).double())
    combination = fit_combination("val_acc", members, labels)
    expected = (0.5 * members[0].exp() + 0.25 * members[1].exp() + 0.25 * members[2].exp()).log()
    assert torch.allclose(combination(members), expected)


def complementary_members() -> tuple[torch.Tensor, torch.Tensor]:
    """Members 0 and 1 are each right and confident on one half and unsure on the other; member 2 is confidently
    wrong everywhere; member 3 duplicates member 0."""
    labels = torch.arange(40) % 4
    confident, unsure = F.one_hot(labels, 4) * 0.9 + 0.025, torch.full((40, 4), 0.25)
    wrong = F.one_hot((labels + 1) % 4, 4) * 0.9 + 0.025
    first = torch.arange(40) < 20
    m0 = torch.where(first[:, None], confident, unsure)
    m1 = torch.where(first[:, None], unsure, confident)
    return torch.stack([m0, m1, wrong, m0]).double().log(), labels


def test_greedy_selection_picks_the_complementary_members():
    members, labels = complementary_members()
    counts = greedy_selection(members, labels, rounds=20)
    assert counts[2] == 0, "a confidently wrong member only hurts"
    assert counts[0] + counts[3] > 0 and counts[1] > 0
    assert (counts[0] + counts[3]) == counts[1], "the symmetric halves are balanced at the best round"
    # with one member best everywhere, selection stops at that member alone
    perfect = F.one_hot(labels, 4).double().clamp_min(1e-4).log()
    assert greedy_selection(torch.stack([members[1], perfect, members[2]]), labels, rounds=10).tolist() == [0, 1, 0]


def test_greedy_selection_with_accuracy_metric():
    members, labels = complementary_members()
    counts = greedy_selection(members, labels, rounds=10, metric="acc")
    assert counts[2] == 0 and counts[1] > 0
    with pytest.raises(UserError, match=r"greedy\.metric"):
        greedy_selection(members, labels, metric="f1")


def test_temperature_scaling_fixes_an_over_confident_model():
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4000, 10, generator=generator) * 1.5
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=generator).squeeze(1)  # labels drawn from it
    over_confident = (4 * calibrated).log_softmax(1)
    temperature = fit_temperature(over_confident, labels)
    assert temperature == pytest.approx(4, rel=0.1)
    before = F.cross_entropy(over_confident, labels)
    after = F.cross_entropy(apply_temperature(over_confident, temperature), labels)
    assert after < before - 0.2
    assert scores(apply_temperature(over_confident, temperature), labels)["ece"] < scores(over_confident, labels)["ece"]
    assert torch.equal(apply_temperature(over_confident, temperature).argmax(1), over_confident.argmax(1))


def test_members_calibrated_before_the_vote_count_by_accuracy_not_confidence():
    """An accurate but under-confident member (as label smoothing makes them) and a less accurate, confident one.
    Raw, the confident one wins the NLL-driven greedy selection and sways the soft vote; with each member's own
    temperature applied first (calibrate_members), the accurate one does, and the fitted rule keeps applying it."""
    generator = torch.Generator().manual_seed(0)
    n, c = 4000, 10
    labels = torch.randint(0, c, (n,), generator=generator)

    def member(accuracy: float, sharpness: float) -> torch.Tensor:
        right = torch.rand(n, generator=generator) < accuracy
        predicted = torch.where(right, labels, (labels + torch.randint(1, c, (n,), generator=generator)) % c)
        logits = torch.randn(n, c, generator=generator) + 4 * F.one_hot(predicted, c)
        return (sharpness * logits).log_softmax(-1)

    members = torch.stack([member(0.95, 0.2), member(0.8, 1.0)])
    temperatures = torch.tensor([fit_temperature(m, labels) for m in members])
    assert temperatures[0] < 0.5 < temperatures[1], "the under-confident member is sharpened, the other hardly"
    accuracy = lambda combination: (combination(members).argmax(-1) == labels).double().mean().item()  # noqa: E731
    raw = fit_combination("greedy", members, labels)
    calibrated = fit_combination("greedy", members, labels, member_temperatures=temperatures)
    assert raw.weights[1] > raw.weights[0] and calibrated.weights[0] > calibrated.weights[1]
    assert accuracy(calibrated) > accuracy(raw) + 0.05
    soft_raw = fit_combination("soft", members, labels)
    soft_calibrated = fit_combination("soft", members, labels, member_temperatures=temperatures)
    assert accuracy(soft_calibrated) > accuracy(soft_raw) + 0.05
    # the same temperatures at prediction time: the rule is the soft vote of the calibrated members
    expected = soft_vote(apply_temperature(members, temperatures.view(-1, 1, 1)))
    assert torch.allclose(soft_calibrated.combine(members), expected)


def test_scores_agree_with_hand_computation_and_torchmetrics():
    # 10 images, every top-class confidence 0.9, 6 right: one occupied bin, ECE = |0.9 - 0.6| = 0.3
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predicted = torch.tensor([0, 1, 2, 0, 1, 2, 1, 2, 0, 1])
    probs = F.one_hot(predicted, 3).double() * 0.85 + 0.05
    result = scores(probs.log(), labels)
    assert result["acc"] == pytest.approx(0.6)
    assert result["ece"] == pytest.approx(0.3, abs=1e-6)
    assert result["ece"] == pytest.approx(MulticlassCalibrationError(3, n_bins=15)(probs.float(), labels).item())
    assert result["nll"] == pytest.approx(-(0.6 * torch.tensor(0.9).log() + 0.4 * torch.tensor(0.05).log()).item())
    assert result["class_acc"] == pytest.approx([2 / 4, 2 / 3, 2 / 3])
    assert scores(probs.log(), labels, probabilistic=False)["nll"] is None


def test_unanimous_hard_vote_of_eleven_members_is_fully_confident():
    # 11 weights of 1/11 sum to a hair above 1 in float32: the scores must still read the shares as probabilities
    labels = torch.arange(100) % 10
    logits = torch.randn(11, 100, 10, generator=torch.Generator().manual_seed(0))
    members = (logits + 12 * F.one_hot(labels, 10)).log_softmax(-1)  # confident and unanimous
    result = scores(hard_vote(members), labels)
    assert result["acc"] == 1.0 and result["ece"] == pytest.approx(0.0, abs=1e-5)


def test_disagreement_matrix():
    predictions = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0], [1, 0, 2, 0]])
    matrix = disagreement(F.one_hot(predictions, 4).double())
    assert matrix.tolist() == [[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]


# --- three tiny runs, combined ----------------------------------------------------------------------------------
