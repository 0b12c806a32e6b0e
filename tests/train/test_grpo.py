"""GRPO's group statistics: advantages and the share of groups that carry a learning signal."""

from __future__ import annotations

import pytest
import torch
from sqltune.train.grpo import group_advantages, varied_groups


def test_only_groups_whose_rewards_differ_carry_signal():
    rewards = torch.tensor([[0.4, 0.4, 0.4, 0.4], [1.0, 0.4, 0.4, 0.4], [0.0, 0.0, 0.0, 0.0], [1.0, 0.2, 0.3, 0.5]])
    assert varied_groups(rewards) == pytest.approx(0.5)
    adv = group_advantages(rewards, "group")
    assert torch.all(adv[0] == 0) and torch.all(adv[2] == 0)
    assert adv[1, 0] > 0 and torch.all(adv[1, 1:] < 0)
    assert adv[1].sum().abs() < 1e-5 and adv[3].sum().abs() < 1e-5


def test_varied_groups_of_an_empty_batch_is_zero():
    assert varied_groups(torch.zeros((0, 4))) == 0.0
