"""Learning-rate schedules of a training recipe: the CPU default (one-cycle) and the papers' cosine recipe."""

import numpy as np
import pytest
import torch

from unseen.config import DataParams, TrainRecipe
from unseen.data import load_dataset
from unseen.training import accuracy, lr_scheduler, predict_logits, train_model


def _rates(schedule: str, steps: int = 100) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    scheduler = lr_scheduler(optimizer, TrainRecipe(lr=0.1, lr_schedule=schedule), steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_starts_at_lr_and_anneals_to_zero():
    rates = _rates("cosine")
    assert rates[0] == pytest.approx(0.1) and rates[50] == pytest.approx(0.05) and rates[-1] < 1e-3
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_one_cycle_warms_up_to_lr_then_decays():
    rates = _rates("one_cycle")
    peak = int(np.argmax(rates))
    assert rates[0] < 0.01 and rates[peak] == pytest.approx(0.1, rel=0.02) and 10 <= peak <= 20 and rates[-1] < 1e-3


def test_cosine_recipe_trains(fashion_root):
    data = load_dataset(DataParams(root=str(fashion_root), download=False, train_subset=600, test_subset=200), seed=0)
    recipe = TrainRecipe(model="mlp", epochs=3, lr=0.05, lr_schedule="cosine")
    model = train_model(data, data.train, recipe, seed=0, device=torch.device("cpu"))
    assert accuracy(predict_logits(model, data, data.test.images, batch_size=256), data.test.labels) > 0.6
