#!/usr/bin/env python3
"""Train the small Fashion-MNIST CNN that zebra-cim ships, and export it as int8.

    pip install torch numpy safetensors      # PyTorch from PyPI, CPU is enough
    apt-get install dataset-fashion-mnist    # the training set (60,000 images)
    python3 experiments/train_fmnist.py      # a few minutes on 2 CPU cores

Float training (Adam, fixed seed), then post-training int8 quantisation by
experiments/export_pytorch.py (per-channel symmetric weights, uint8
activations calibrated on 2,000 training images). Writes
models/fmnist_cnn/model.{toml,safetensors} and prints the float and int8
test accuracies; the int8 one is what `zebra` reports as clean accuracy.
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


def main():
    ap = argparse.ArgumentParser(description="Train and export the shipped Fashion-MNIST CNN")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the gzipped IDX files")
    ap.add_argument("--test-data", default=os.path.join(ROOT, "data", "fashion-mnist"))
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "fmnist_cnn"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    xtr = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))
    ytr = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))
    xte = read_idx(os.path.join(args.test_data, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx(os.path.join(args.test_data, "t10k-labels-idx1-ubyte.gz"))
    to_t = lambda x: torch.from_numpy(x[:, None].astype(np.float32) / 255.0)
    Xtr, Ytr = to_t(xtr), torch.from_numpy(ytr.astype(np.int64))
    Xte = to_t(xte)

    model = build_model()
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
            loss = loss_fn(model(Xtr[idx]), Ytr[idx])
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(Xte).argmax(1).numpy() == yte).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, float test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")

    from export_pytorch import export, int8_logits
    path = export(model, Xtr[:2000], args.out, "model")
    logits = int8_logits(path, xte[:, None])
    int8_acc = (logits.argmax(1) == yte).mean()
    # The first 100 images' int8 logits: zebra's tests check its inference against them.
    np.save(os.path.join(args.out, "reference_logits.npy"), logits[:100].astype(np.float32))
    print(f"wrote {path}")
    print(f"float test accuracy {acc:.4f}, int8 test accuracy {int8_acc:.4f} (10,000 images)")


if __name__ == "__main__":
    main()
