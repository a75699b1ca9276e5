"""A user's own float PyTorch models, as codesign imports them (``model.module: "net.py:MLP"``)."""

from torch import nn


class MLP(nn.Module):
    """64-32-10 on flat 8x8 digits."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.1)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.out(self.drop(self.act(self.fc1(x))))


class CNN(nn.Module):
    """conv-BN-ReLU-pool, conv-BN-pool-ReLU (codesign moves the ReLU before the pool), x.view(x.size(0), -1),
    linear; on 1x8x8 digits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.MaxPool2d(2),
                                      nn.ReLU())
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)
