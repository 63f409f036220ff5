#!/usr/bin/env python3
"""PyTorch's CPU side of scripts/cpu-side-by-side: training examples/s and test-set evaluation time.

Runs what `playbook train` runs on the CPU, with the same settings scripts/cpu-side-by-side passes
to ours: Fashion-MNIST (the IDX files of Debian's dataset-fashion-mnist), batch 128, FP32, no
augmentation, and
  resnet20  the CIFAR-style ResNet-20 of models/resnet.cpp (16/32/64 channels, 1x1 projection
            shortcuts with batch norm, no conv bias), Nesterov SGD lr 0.1 momentum 0.9 wd 5e-4
  mlp       784-256-128-10 with ReLU, SGD momentum 0.9 lr 0.05
  train     examples/s: the median over windows of --window steps after --warmup steps, as our
            trainer's metrics.jsonl reports it (forward, cross entropy, backward, optimizer step on
            shuffled batches already in memory)
  eval      seconds to evaluate the 10k test images in eval mode, batches of 1000, no autograd
torch.set_num_threads(--threads) (oneDNN/OpenMP and OpenBLAS alike). Prints one JSON object.

    python3 bench/pytorch/cpu_side_by_side.py --model resnet20 --mode train --threads 2

Exits with status 2 (and says why) when torch is missing.
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

DATA = "/usr/share/datasets/fashion-mnist"


def load_idx(torch, path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    return data.reshape(dims)


def load_split(torch, data_dir, split):
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(torch, os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")).float() / 255.0
    y = load_idx(torch, os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).long()
    return ((x - 0.2860) / 0.3530).unsqueeze(1), y  # (N,1,28,28), normalised like ours


def build(torch, model):
    nn = torch.nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + idt)

    if model == "resnet20":
        layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        cin = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                layers.append(Basic(cin, width, stride if b == 0 else 1))
                cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        net = nn.Sequential(*layers)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        return net, opt
    if model == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                            nn.ReLU(), nn.Linear(128, 10))
        return net, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    raise ValueError(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet20", "mlp"), required=True)
    parser.add_argument("--mode", choices=("train", "eval"), required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--data", default=DATA)
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("cpu_side_by_side.py: torch is not installed (Debian: python3-torch)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, opt = build(torch, args.model)
    result = {"model": args.model, "mode": args.mode, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "batch_size": args.batch_size}
    if args.mode == "train":
        x, y = load_split(torch, args.data, "train")
        net.train()
        loss_fn = torch.nn.CrossEntropyLoss()
        order = torch.randperm(x.shape[0])
        cursor = 0

        def step():
            nonlocal cursor
            if cursor + args.batch_size > x.shape[0]:
                cursor = 0
            idx = order[cursor:cursor + args.batch_size]
            cursor += args.batch_size
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[idx]), y[idx])
            loss.backward()
            opt.step()

        for _ in range(args.warmup):
            step()
        rates = []
        for _ in range(args.windows):
            start = time.perf_counter()
            for _ in range(args.window):
                step()
            rates.append(args.window * args.batch_size / (time.perf_counter() - start))
        result["examples_per_sec"] = statistics.median(rates)
        result["window_rates"] = rates
    else:
        x, y = load_split(torch, args.data, "test")
        net.eval()
        start = time.perf_counter()
        errors = 0
        with torch.no_grad():
            for i in range(0, x.shape[0], args.eval_batch_size):
                logits = net(x[i:i + args.eval_batch_size])
                errors += int((logits.argmax(1) != y[i:i + args.eval_batch_size]).sum())
        result["eval_seconds"] = time.perf_counter() - start
        result["examples"] = int(x.shape[0])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
