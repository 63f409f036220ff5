#!/usr/bin/env python3
"""PyTorch's fused Adam on a ResNet-50 parameter set: the baseline for bench/bench_optim_cuda.cpp.

Runs torch.optim.Adam(fused=True) (and, for reference, the foreach implementation) over the 161
tensors / 25,557,032 parameters of torchvision's ResNet-50, timed with CUDA events (median of
--reps steps after --warmup), and prints GB/s with the byte count pb_bench_optim_cuda uses:
Adam reads param, grad, m, v and writes param, m, v = 7 x 4 bytes per parameter. The copy
bandwidth of a 1 GiB device-to-device copy (read + write) is measured in the same process, so
both programs report the same copy_frac = GB/s / copy GB/s and can run in one device call:

    build/bench/pb_bench_optim_cuda --benchmark_filter=adam && python3 bench/pytorch/fused_adam.py

Exits with status 2 (and says why) when torch or a CUDA device is missing.
"""
import argparse
import json
import statistics
import sys


def resnet50_parameter_shapes():
    """Parameter shapes of torchvision's resnet50(), in its order (161 tensors)."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for blocks, width in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        for b in range(blocks):
            shapes += [(width, inplanes, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, inplanes, 1, 1), (4 * width,), (4 * width,)]
            inplanes = 4 * width
    shapes += [(1000, 2048), (1000,)]
    return shapes


def median_ms(torch, fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    try:
        import torch
    except ImportError:
        print("fused_adam.py: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("fused_adam.py: no CUDA device visible to torch", file=sys.stderr)
        return 2

    device = torch.device("cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    shapes = resnet50_parameter_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    bytes_per_step = 7 * 4 * numel

    # 1 GiB device-to-device copy, read + write counted (pb::bench::copy_bandwidth_gbs()).
    src = torch.rand(1 << 28, device=device, generator=gen)
    dst = torch.empty_like(src)
    copy_ms = median_ms(torch, lambda: dst.copy_(src), 3, 20)
    copy_gbs = 2 * src.numel() * 4 / (copy_ms * 1e-3) / 1e9
    del src, dst

    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "tensors": len(shapes), "params": numel, "bytes_per_step": bytes_per_step,
               "copy_GB/s": copy_gbs}
    for impl in ("fused", "foreach"):
        params = [torch.nn.Parameter(torch.rand(s, device=device, generator=gen) * 2 - 1)
                  for s in shapes]
        for p in params:
            p.grad = torch.rand(p.shape, device=device, generator=gen) * 2 - 1
        opt = torch.optim.Adam(params, lr=1e-4, eps=1e-8, **{impl: True})
        with torch.no_grad():
            ms = median_ms(torch, opt.step, args.warmup, args.reps)
        gbs = bytes_per_step / (ms * 1e-3) / 1e9
        results[impl] = {"us": ms * 1e3, "GB/s": gbs, "copy_frac": gbs / copy_gbs}
        del opt, params
        torch.cuda.empty_cache()

    if args.json:
        print(json.dumps(results))
    else:
        print(f"{results['gpu']}, torch {results['torch']}: {len(shapes)} tensors, "
              f"{numel} parameters, {bytes_per_step / 1e6:.1f} MB per Adam step (7 x 4 B/param)")
        print(f"copy bandwidth      {copy_gbs:8.1f} GB/s")
        for impl in ("fused", "foreach"):
            r = results[impl]
            print(f"torch Adam {impl:8s} {r['us']:8.1f} us  {r['GB/s']:8.1f} GB/s  "
                  f"copy_frac {r['copy_frac']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
