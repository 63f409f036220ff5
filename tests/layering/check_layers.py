#!/usr/bin/env python3
"""Checks that #include directives point down the layers of DESIGN.md, and only down.

Each folder of the tree belongs to a layer; a file may include its own layer and the layers
listed below it in ALLOWED, nothing else. The CMake libraries enforce the same at link time
(each links only the libraries below it); this check also catches header-only reaches that
the linker cannot see. Usage:

    check_layers.py [ROOT]          exit 1 and one line per upward include, 0 when clean
    check_layers.py --self-test     proves that a deliberate upward include is caught
"""
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

# Layer of a file: the longest matching folder prefix.
LAYERS = {
    "kernels": "kernels",
    "runtime/core": "core",
    "runtime/device": "core",  # core and device are one library (pb_core): tensors own memory
    "runtime/autograd": "ops",
    "runtime/ops": "ops",
    "runtime/nn": "nn",
    "runtime/config": "config",
    "runtime/optim": "optim",
    "runtime/data": "data",
    "runtime/checkpoint": "checkpoint",
    "models": "models",
    "train": "train",
    "tuning": "tuning",
    "cli": "cli",
}

# What each layer may include besides itself (the libraries it links, and their headers).
ALLOWED = {
    "kernels": set(),
    "core": {"kernels"},
    "config": {"core"},  # runtime/core/error.h only; pb_config links nothing of pb_core
    "ops": {"core", "kernels"},
    "nn": {"ops", "core"},
    "optim": {"nn", "ops", "core", "config", "kernels"},
    "data": {"core", "kernels"},
    "checkpoint": {"core"},
    "models": {"nn", "ops", "core", "config"},
    "train": {"models", "optim", "data", "checkpoint", "nn", "ops", "core", "config"},
    "tuning": {"train", "models", "optim", "data", "checkpoint", "nn", "ops", "core", "config"},
    "cli": {"tuning", "train", "models", "optim", "data", "checkpoint", "nn", "ops", "core",
            "config"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCES = (".h", ".cuh", ".cpp", ".cu")


def layer_of(relative: str):
    best = None
    for prefix, layer in LAYERS.items():
        if relative == prefix or relative.startswith(prefix + "/"):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    return best[1] if best else None


def violations(root: pathlib.Path):
    found = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in SOURCES or not path.is_file():
            continue
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("build", "tests/", "bench/", "examples/")):
            continue
        layer = layer_of(relative)
        if layer is None:
            continue
        text = path.read_text(errors="replace")
        for match in INCLUDE.finditer(text):
            target = layer_of(match.group(1))
            if target is None or target == layer or target in ALLOWED[layer]:
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{relative}:{line}: layer '{layer}' includes \"{match.group(1)}\" "
                         f"of layer '{target}' (allowed: {', '.join(sorted(ALLOWED[layer])) or 'none'})")
    return found


def self_test(script: pathlib.Path, root: pathlib.Path) -> int:
    """Copies the layered folders, plants one upward include per pair below, expects each caught."""
    plants = [("kernels/gemm.h", "runtime/core/tensor.h"),
              ("runtime/core/shape.h", "runtime/ops/ops.h"),
              ("runtime/optim/clip.h", "train/config.h"),
              ("models/zoo.h", "train/trainer.h"),
              ("cli/playbook.cpp", "kernels/gemm.h")]
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "tree"
        for prefix in LAYERS:
            src = root / prefix
            if src.is_dir() and not (copy / prefix).exists():
                shutil.copytree(src, copy / prefix)
        clean = subprocess.run([sys.executable, str(script), str(copy)], capture_output=True,
                               text=True)
        if clean.returncode != 0:
            print("self-test: the unmodified tree is not clean:\n" + clean.stdout)
            return 1
        for where, include in plants:
            target = copy / where
            original = target.read_text()
            target.write_text(f'#include "{include}"\n' + original)
            r = subprocess.run([sys.executable, str(script), str(copy)], capture_output=True,
                               text=True)
            target.write_text(original)
            if r.returncode == 0 or include not in r.stdout:
                print(f"self-test: an include of {include} in {where} was not caught")
                return 1
            print(f"self-test: caught {r.stdout.strip()}")
    return 0


def main() -> int:
    script = pathlib.Path(__file__).resolve()
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        root = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else script.parents[2]
        return self_test(script, root)
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else script.parents[2]
    found = violations(root)
    for v in found:
        print(v)
    if not found:
        print(f"layers: every include of {root} points down")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
