"""The pure decoding rules: acceptance, renoising, stopping, temperature, EOS truncation, early exit."""

from __future__ import annotations

import pytest
import torch

from engine.diffusion.early_exit import draft_due
from engine.diffusion.rules import (
    accept_by_entropy_bound,
    renoise,
    stable_and_confident,
    step_temperature,
    token_entropy,
    truncate_at_eos,
)
from engine.types import EarlyExitParams


def test_entropy_bound_accepts_lowest_entropy_tokens_until_the_bound() -> None:
    entropy = torch.tensor([[0.30, 0.01, 0.05, 2.0]])  # sorted: 0.01, 0.05, 0.30, 2.0
    current = torch.tensor([[10, 11, 12, 13]])
    proposed = torch.tensor([[20, 21, 22, 23]])
    # cumsum - current: 0, 0.01, 0.06, 0.36 -> with bound 0.1 the first three (by entropy) pass
    accepted, mask = accept_by_entropy_bound(current, proposed, entropy, torch.tensor([0.1]))
    assert mask.tolist() == [[True, True, True, False]]
    assert accepted.tolist() == [[20, 21, 22, 13]]


def test_entropy_bound_always_accepts_at_least_the_most_certain_token() -> None:
    entropy = torch.tensor([[5.0, 4.0, 6.0]])
    _, mask = accept_by_entropy_bound(
        torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), entropy, torch.tensor([1e-6])
    )
    assert mask.tolist() == [[False, True, False]]


def test_entropy_bound_rows_are_independent() -> None:
    torch.manual_seed(0)
    entropy = torch.rand(5, 12)
    current = torch.randint(0, 50, (5, 12))
    proposed = torch.randint(0, 50, (5, 12))
    bounds = torch.tensor([0.05, 0.2, 1.0, 3.0, 0.5])
    batched, batched_mask = accept_by_entropy_bound(current, proposed, entropy, bounds)
    for row in range(5):
        alone, alone_mask = accept_by_entropy_bound(
            current[row : row + 1], proposed[row : row + 1], entropy[row : row + 1], bounds[row : row + 1]
        )
        assert torch.equal(batched[row], alone[0])
        assert torch.equal(batched_mask[row], alone_mask[0])


def test_renoise_replaces_only_rejected_positions() -> None:
    accepted = torch.tensor([[1, 2, 3]])
    mask = torch.tensor([[True, False, True]])
    noise = torch.tensor([[7, 8, 9]])
    assert renoise(accepted, mask, noise).tolist() == [[1, 8, 3]]


def test_stop_needs_stability_and_confidence() -> None:
    history = torch.full((2, 1, 3), -1)
    argmax = torch.tensor([[1, 2, 3], [4, 5, 6]])
    low = torch.tensor([0.001, 0.001])
    threshold = torch.tensor([0.005, 0.005])
    stop, history = stable_and_confident(history, argmax, low, threshold)
    assert stop.tolist() == [False, False]  # nothing to be stable against yet
    stop, history = stable_and_confident(history, torch.tensor([[1, 2, 3], [4, 5, 0]]), low, threshold)
    assert stop.tolist() == [True, False]  # row 1 changed
    stop, _ = stable_and_confident(
        history, torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([0.01, 0.001]), threshold
    )
    assert stop.tolist() == [False, True]  # row 0 not confident


def test_stop_without_stability_requirement() -> None:
    stop, history = stable_and_confident(
        torch.empty(1, 0, 4, dtype=torch.long),
        torch.tensor([[1, 2, 3, 4]]),
        torch.tensor([0.0]),
        torch.tensor([0.1]),
    )
    assert stop.tolist() == [True]
    assert history.shape == (1, 0, 4)


def test_temperature_runs_from_t_max_to_t_min() -> None:
    assert step_temperature(10, 10, 0.4, 0.8).item() == pytest.approx(0.8)
    assert step_temperature(5, 10, 0.4, 0.8).item() == pytest.approx(0.6)
    assert step_temperature(0, 10, 0.4, 0.8).item() == pytest.approx(0.4)
    assert step_temperature(3, 10, 0.4, 0.8).dtype == torch.float32


def test_token_entropy_of_uniform_and_certain_distributions() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]])
    entropy = token_entropy(logits)
    assert entropy[0, 0].item() == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert entropy[0, 1].item() == pytest.approx(0.0, abs=1e-6)


def test_truncate_at_first_eos() -> None:
    assert truncate_at_eos([5, 6, 1, 7, 1], frozenset({1})) == ([5, 6], True)
    assert truncate_at_eos([5, 6], frozenset({1})) == ([5, 6], False)
    assert truncate_at_eos([9, 5, 2], frozenset({1, 2})) == ([9, 5], True)


def test_first_draft_at_draft_step_or_when_confident() -> None:
    params = EarlyExitParams(draft_step=3, draft_confidence=0.2)
    assert not draft_due(params, block_step=1, mean_entropy=1.0, last_draft_step=None, changed=True)
    assert draft_due(params, block_step=1, mean_entropy=0.1, last_draft_step=None, changed=True)
    assert draft_due(params, block_step=3, mean_entropy=5.0, last_draft_step=None, changed=True)


def test_redrafts_only_when_enabled_and_changed() -> None:
    once = EarlyExitParams(draft_step=1, redraft_every=0)
    assert not draft_due(once, block_step=5, mean_entropy=0.0, last_draft_step=1, changed=True)
    every2 = EarlyExitParams(draft_step=1, redraft_every=2)
    assert not draft_due(every2, block_step=2, mean_entropy=0.0, last_draft_step=1, changed=True)
    assert draft_due(every2, block_step=3, mean_entropy=0.0, last_draft_step=1, changed=True)
    assert not draft_due(every2, block_step=3, mean_entropy=0.0, last_draft_step=1, changed=False)
