"""A lab's own training program, outside the computewatch package (docs/formats.md, "Training
program"): linear regression on 16-byte records read from the Prover's data folder."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

from .model import Regressor

RECORD = 16  # four little-endian float32: three features and the target


class Program:
    def __init__(self, hyperparameters: dict, data_dir: Path | None) -> None:
        if data_dir is None:
            raise ValueError("this program reads its samples from the Prover's data folder")
        self.hp = hyperparameters
        self.data = (Path(data_dir) / "records.bin").read_bytes()
        self.batch_size = int(hyperparameters["batch_size"])

    def build_model(self, generator: torch.Generator) -> torch.nn.Module:
        return Regressor(generator)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.hp["lr"], momentum=self.hp["momentum"])

    def build_scheduler(self, optimizer: torch.optim.Optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.hp["decay_every"], gamma=0.5)

    def sample(self, index: int) -> bytes:
        return self.data[index * RECORD : (index + 1) * RECORD]

    def collate(self, samples):
        rows = torch.tensor([struct.unpack("<4f", s) for s in samples], dtype=torch.float32)
        return rows[:, :3], rows[:, 3:]

    def loss(self, model: torch.nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(model(x), y)

    def train_step(self, model, optimizer, scheduler, batch) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = self.loss(model, batch)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()


def make_program(hyperparameters: dict, data_dir: Path | None = None) -> Program:
    return Program(hyperparameters, data_dir)
