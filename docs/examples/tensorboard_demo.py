"""The run behind the TensorBoard screenshots in docs/dashboards.md: a small CNN, 8 epochs,
SROPCallback with a TensorBoardLogger (``python docs/examples/tensorboard_demo.py``, then
``tensorboard --logdir logs``)."""

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_srop import SROPCallback


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.block1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 7 * 7, 4))

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))

    def training_step(self, b, i):
        x, y = b
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, b, i):
        x, y = b
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    xs = torch.linspace(0, 1, 28)
    freq = (y + 1).float()[:, None, None] * 2
    x = torch.sin(2 * torch.pi * freq * xs[None, None, :]) * torch.ones(n, 28, 1)
    x = x + 0.8 * torch.randn(n, 28, 28, generator=g)
    return TensorDataset(x[:, None], y)


torch.manual_seed(0)
cb = SROPCallback(stats=("mean", "median"), ordered_tags=True)
tr = L.Trainer(
    max_epochs=8,
    accelerator="cpu",
    callbacks=[cb],
    logger=TensorBoardLogger("logs", name="demo"),
    enable_progress_bar=False,
    enable_checkpointing=False,
    log_every_n_steps=5,
)
tr.fit(
    Net(),
    DataLoader(data(512, 0), batch_size=64, shuffle=True),
    DataLoader(data(128, 1), batch_size=64),
)
print({k: float(v) for k, v in tr.callback_metrics.items()})
