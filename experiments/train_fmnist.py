#!/usr/bin/env python3
"""Train the Fashion-MNIST networks that zebra-cim ships, and export them as int8.

    pip install torch numpy safetensors      # PyTorch from PyPI, CPU is enough
    apt-get install dataset-fashion-mnist    # the training set (60,000 images)
    python3 experiments/train_fmnist.py                 # the small CNN: ~3 min on 2 cores
    python3 experiments/train_fmnist.py --arch resnet    # the ResNet: ~15 min on 2 cores

Term-budget variants (every weight at most K signed power-of-two terms)
fine-tune the shipped float ResNet with the budget in the loop, then export
with the same budget:

    python3 experiments/train_fmnist.py --arch resnet --terms 2 --finetune models/fmnist_resnet/float.pt

(writes models/fmnist_resnet_t2/; 2 epochs by default). The forward pass
uses each conv and linear weight's nearest K-term value on its channel's
int8 scale, the backward pass the straight-through estimator (the gradient
of the quantised weight is applied to the float one).

Float training (fixed seed), then post-training int8 quantisation by
experiments/export_pytorch.py (per-channel symmetric weights, int8/uint8
activations calibrated on 2,000 training images). Writes
models/fmnist_cnn/ or models/fmnist_resnet/ (model.toml, model.safetensors,
reference_logits.npy, and for the ResNet its float weights float.pt) and
prints the float and int8 test accuracies; the int8 one is what `zebra`
reports as clean accuracy.
"""

import argparse
import gzip
import os
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def read_idx(path):
    """An IDX file (gzipped or raw) as a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_model():
    """conv 1->8 3x3, pool, conv 8->16 3x3, pool, fc 784->64, fc 64->10."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 64), nn.ReLU(),
        nn.Linear(64, 10),
    )


class Block(nn.Module):
    """A basic residual block: relu(bn(conv(relu(bn(conv(x))))) + x)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


class ResNet(nn.Module):
    """Stem conv 1->32 at 28x28, max-pool to 14x14; a residual block of 32
    channels; a stride-2 conv to 64 channels at 7x7 and a block; a stride-2
    conv to 128 channels at 4x4 and a block (its convs are 1,152-row
    arrays); global average pool; linear 128->10. About 14 M MACs per image.
    """

    def __init__(self):
        super().__init__()
        def conv_bn(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(cout), nn.ReLU()]
        self.stem = nn.Sequential(*conv_bn(1, 32, 1), nn.MaxPool2d(2))
        self.stage1 = Block(32)
        self.down2 = nn.Sequential(*conv_bn(32, 64, 2))
        self.stage2 = Block(64)
        self.down3 = nn.Sequential(*conv_bn(64, 128, 2))
        self.stage3 = Block(128)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.stage1(self.stem(x))
        x = self.stage2(self.down2(x))
        x = self.stage3(self.down3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class TermQuant(nn.Module):
    """A parametrisation: the weight's nearest value with at most `terms` CSD
    terms per element on its output channel's int8 scale (what the exporter
    writes), with the straight-through gradient."""

    def __init__(self, terms):
        super().__init__()
        from export_pytorch import term_grid
        self.register_buffer("grid", torch.from_numpy(term_grid(terms)).float())

    def forward(self, w):
        flat = w.reshape(w.shape[0], -1)
        scale = (flat.abs().amax(1, keepdim=True) / 127.0).clamp_min(1e-12)
        x = (flat / scale).clamp(-127, 127).detach()
        hi = torch.searchsorted(self.grid, x.contiguous()).clamp(1, len(self.grid) - 1)
        lo_v, hi_v = self.grid[hi - 1], self.grid[hi]
        d_lo, d_hi = (x - lo_v).abs(), (hi_v - x).abs()
        pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi_v.abs() < lo_v.abs()))
        q = torch.where(pick_hi, hi_v, lo_v) * scale
        return w + (q.reshape(w.shape) - w).detach()


def add_term_budget(model, terms):
    """Puts TermQuant on every Conv2d and Linear weight of `model`."""
    from torch.nn.utils import parametrize
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", TermQuant(terms))


def bake_term_budget(model):
    """Replaces each parametrised weight by its quantised value."""
    from torch.nn.utils import parametrize
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def augment(x):
    """Random shifts of up to 2 pixels (zero padded) and horizontal flips."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    dy, dx = torch.randint(0, 5, (2,))
    x = padded[:, :, dy:dy + 28, dx:dx + 28]
    flip = torch.rand(n) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def main():
    ap = argparse.ArgumentParser(description="Train and export the shipped Fashion-MNIST CNN")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the gzipped IDX files")
    ap.add_argument("--test-data", default=os.path.join(ROOT, "data", "fashion-mnist"))
    ap.add_argument("--arch", choices=["cnn", "resnet"], default="cnn")
    ap.add_argument("--out", help="output folder (default: models/fmnist_cnn or models/fmnist_resnet)")
    ap.add_argument("--epochs", type=int, help="default: 15 (cnn), 12 (resnet)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--terms", type=int, choices=range(1, 9), metavar="K",
                    help="term budget per weight: fine-tune --finetune with it in the loop and export with it")
    ap.add_argument("--finetune", metavar="FLOAT_PT",
                    help="start from this state_dict (with --terms: default 2 epochs at a small learning rate)")
    args = ap.parse_args()
    if args.terms and not args.finetune:
        ap.error("--terms fine-tunes a trained model: give --finetune FLOAT_PT")

    resnet = args.arch == "resnet"
    default_out = "fmnist_resnet" if resnet else "fmnist_cnn"
    if args.terms:
        default_out += f"_t{args.terms}"
    args.out = args.out or os.path.join(ROOT, "models", default_out)
    args.epochs = args.epochs or (2 if args.finetune else 12 if resnet else 15)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    xtr = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    ytr = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    xte = read_idx(os.path.join(args.test_data, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx(os.path.join(args.test_data, "t10k-labels-idx1-ubyte.gz"))
    to_t = lambda x: torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
    Xtr, Ytr = to_t(xtr), torch.from_numpy(ytr.astype(np.int64))
    Xte = to_t(xte)

    model = ResNet() if resnet else build_model()
    if args.finetune:
        model.load_state_dict(torch.load(args.finetune, map_location="cpu"))
    if args.terms:
        add_term_budget(model, args.terms)
    steps = (len(Xtr) + 127) // 128
    if args.finetune:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps)
    elif resnet:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=args.epochs * steps)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(Xtr))
        for i in range(0, len(perm), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            x = augment(Xtr[idx]) if resnet else Xtr[idx]
            loss = loss_fn(model(x), Ytr[idx])
            loss.backward()
            opt.step()
            if resnet or args.finetune:
                sched.step()
        if not (resnet or args.finetune):
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = np.mean([(model(Xte[i:i + 1000]).argmax(1).numpy() == yte[i:i + 1000]).mean()
                           for i in range(0, len(Xte), 1000)])
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, float test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")

    from export_pytorch import export, int8_logits
    os.makedirs(args.out, exist_ok=True)
    if args.terms:
        bake_term_budget(model)
    elif resnet:
        torch.save(model.state_dict(), os.path.join(args.out, "float.pt"))
    path = export(model, Xtr[:2000], args.out, "model", terms=args.terms)
    logits = int8_logits(path, xte[:, None])
    int8_acc = (logits.argmax(1) == yte).mean()
    # The first 100 images' int8 logits: zebra's tests check its inference against them.
    np.save(os.path.join(args.out, "reference_logits.npy"), logits[:100].astype(np.float32))
    print(f"wrote {path}")
    print(f"float test accuracy {acc:.4f}, int8 test accuracy {int8_acc:.4f} (10,000 images)")


if __name__ == "__main__":
    main()
