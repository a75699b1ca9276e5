"""A user's own float PyTorch models, as codesign imports them (``model.module: "net.py:MLP"``)."""

import torch
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


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN, plus the block's input (identity skip), then ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class ResNet(nn.Module):
    """A small ResNet on 1x8x8 digits: stem, a basic block (identity skip), MaxPool, a block with a 1x1 projection
    shortcut to 16 channels, MaxPool, flatten, linear. codesign folds the BatchNorm before each residual add into
    its conv (a sum is not a per-channel function of one accumulator) and keeps the others as thresholds."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = BasicBlock(width)
        self.pool1 = nn.MaxPool2d(2)
        self.conv = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * width)
        self.shortcut = nn.Sequential(nn.Conv2d(width, 2 * width, 1, bias=False), nn.BatchNorm2d(2 * width))
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * width * 2 * 2, 10)

    def forward(self, x):
        x = self.pool1(self.block1(self.stem(x)))
        x = torch.relu(self.bn(self.conv(x)) + self.shortcut(x))
        return self.fc(torch.flatten(self.pool2(x), 1))
