#!/usr/bin/env python3
"""PyTorch's training step time for the models scripts/gpu-run trains with `playbook train`.

The PyTorch side of the end-to-end comparison: one SGD-with-momentum step (forward, cross
entropy, backward, update) of
  resnet50  torchvision-layout ImageNet ResNet-50 on 3x224x224 inputs, 1000 classes
            (configs/resnet50_synthetic.toml)
  resnet20  the CIFAR-style ResNet-20 (16/32/64 channels, 1x1 projection shortcuts) on 1x28x28
            inputs, 10 classes (configs/resnet20_fashion_mnist.toml)
on random data already on the GPU (no input pipeline), FP32 with TF32 off on both sides (our
kernels are FP32 FFMA), cuDNN autotuning on. Step time is the median of --steps steps timed
with CUDA events after --warmup steps. The models are defined here (no torchvision needed).

    python3 bench/pytorch/resnet_step_time.py --model resnet50 --batch-size 64 --json

Exits with status 2 (and says why) when torch or a CUDA device is missing.
"""
import argparse
import json
import statistics
import sys


def build(torch, model):
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = 4 * width
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            return self.relu(self.bn3(self.conv3(y)) + idt)

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + idt)

    if model == "resnet50":
        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                  nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for blocks, width, stride in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)):
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = 4 * width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
        return nn.Sequential(*layers), (3, 224, 224), 1000
    if model == "resnet20":
        layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        cin = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                layers.append(Basic(cin, width, stride if b == 0 else 1))
                cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers), (1, 28, 28), 10
    raise ValueError(model)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("resnet50", "resnet20"), default="resnet50")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        print("resnet_step_time.py: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("resnet_step_time.py: no CUDA device visible to torch", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    dev = torch.device("cuda")
    torch.manual_seed(0)
    net, shape, classes = build(torch, args.model)
    net = net.to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.rand((args.batch_size,) + shape, device=dev)
    y = torch.randint(0, classes, (args.batch_size,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    ms = statistics.median(times)
    result = {"model": args.model, "batch_size": args.batch_size, "steps": args.steps,
              "step_ms": ms, "examples_per_sec": args.batch_size / (ms * 1e-3),
              "params": sum(p.numel() for p in net.parameters()),
              "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tf32": False}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['gpu']}, torch {result['torch']}: {args.model} batch {args.batch_size}: "
              f"{ms:.2f} ms/step, {result['examples_per_sec']:.0f} examples/s (FP32, no TF32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
