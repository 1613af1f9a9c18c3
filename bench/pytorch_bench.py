#!/usr/bin/env python3
"""The peers of `resnet bench`: the same workloads, timed the same way.

Usage (with the venv from scripts/torch-venv.sh; bench/compare.sh runs this for you):
    $PY bench/pytorch_bench.py --workload resnet20-train --peer channels_last --json
    $PY bench/pytorch_bench.py --workload resnet50-infer-b16 --peer onnxruntime --json
    $PY bench/pytorch_bench.py --workload matmul --steps 3 --warmup 1 --json

Peers (--peer), all float32 on --threads threads (default 2):
    eager           PyTorch as its users run it by default: eager mode, NCHW,
                    torch.inference_mode() for inference.
    channels_last   PyTorch eager with the model and input in channels_last
                    (NHWC) memory format: oneDNN's blocked/NHWC convolutions,
                    its fastest fp32 CPU setting without compilation.
    compile         channels_last + torch.compile (inductor, default mode).
    onnxruntime     inference only: the same torchvision model exported to ONNX
                    (opset 17, batch as a dynamic axis; cached under
                    ~/.cache/resnet/onnx) run by onnxruntime's CPU provider
                    (MLAS) with every graph optimisation (ORT_ENABLE_ALL),
                    intra_op_num_threads = --threads, inter_op 1, sequential.
                    Its process imports no PyTorch (the export runs in a child
                    process), so its peak RSS is onnxruntime's own.

Workloads (names shared with bench/compare.sh):
    resnet{20,56,110}-train  CIFAR ResNet (option A shortcuts, scripts/golden_fixtures.py),
                             batch 128, 3x32x32, 10 classes. One step =
                             zero_grad(set_to_none=True) + forward (BN in train mode)
                             + cross-entropy + backward + SGD(lr 0.01, momentum 0.9,
                             weight decay 1e-4) step.
    resnet50-infer-b16       torchvision resnet50 (v1.5: stride in the 3x3 conv),
    resnet50-infer-b1        1000 classes, eval mode, 3x224x224, batch 16 / 1.
                             One step = one forward pass.
    resnet50-train-b16       the same model training at batch 16 / 32 (one step
    resnet50-train-b32       as for the CIFAR nets).
    resnet18-infer-b16       torchvision resnet18 (basic blocks, mostly 3x3
    resnet18-infer-b1        convolutions), as resnet50-infer-*.
    matmul                   float32 4096x4096 @ 4096x4096: the machine's matmul
                             ceiling (best of --steps after --warmup).

Output: one JSON object (with --json) using the keys of `resnet bench --json`:
img_per_s (batch / mean step time), ms_per_step (mean), ms_per_step_median,
gflops (achieved: 2 FLOPs per multiply-add, a training step counted as 3
forward passes), peak_rss_mib (getrusage ru_maxrss), plus "torch" (version),
"threads", "workload" and "macs_per_image" (summed over every Conv2d and
Linear with forward hooks on a one-image pass).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import subprocess

# PyTorch is imported in main() for the PyTorch peers only (onnxruntime's
# process must not carry it: its peak RSS is measured).
torch = nn = F = None


def CifarResNet(n):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
    from golden_fixtures import CifarResNet as Net

    return Net(n)


def resnet50():
    import torchvision

    return torchvision.models.resnet50(num_classes=1000)


def resnet18():
    import torchvision

    return torchvision.models.resnet18(num_classes=1000)


# name -> (model factory, mode, batch, input side, classes)
WORKLOADS = {
    "resnet20-train": (lambda: CifarResNet(3), "train", 128, 32, 10),
    "resnet56-train": (lambda: CifarResNet(9), "train", 128, 32, 10),
    "resnet110-train": (lambda: CifarResNet(18), "train", 128, 32, 10),
    "resnet50-infer-b16": (resnet50, "infer", 16, 224, 1000),
    "resnet50-infer-b1": (resnet50, "infer", 1, 224, 1000),
    "resnet50-train-b16": (resnet50, "train", 16, 224, 1000),
    "resnet50-train-b32": (resnet50, "train", 32, 224, 1000),
    "resnet18-infer-b16": (resnet18, "infer", 16, 224, 1000),
    "resnet18-infer-b1": (resnet18, "infer", 1, 224, 1000),
}
PEERS = ("eager", "channels_last", "compile", "onnxruntime")
ONNX_DIR = os.path.expanduser("~/.cache/resnet/onnx")
MATMUL_N = 4096


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def macs_per_image(model, x):
    """Multiply-adds of one image through every Conv2d and Linear (forward hooks)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += out.numel() * (m.in_channels // m.groups) * kh * kw
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()  # leave the BN running statistics untouched
    with torch.inference_mode():
        model(x[:1])
    model.train(was_training)
    for h in handles:
        h.remove()
    return total


def time_steps(step, steps, warmup):
    """Seconds of each of `steps` calls of `step()` after `warmup` untimed ones."""
    times = []
    for s in range(warmup + steps):
        t = time.perf_counter()
        step()
        if s >= warmup:
            times.append(time.perf_counter() - t)
    return times


def bench_matmul(steps, warmup):
    a, b = torch.randn(MATMUL_N, MATMUL_N), torch.randn(MATMUL_N, MATMUL_N)
    c = torch.empty(MATMUL_N, MATMUL_N)
    times = time_steps(lambda: torch.matmul(a, b, out=c), steps, warmup)
    flop = 2.0 * MATMUL_N**3
    return {
        "n": MATMUL_N,
        "ms_best": min(times) * 1e3,
        "ms_median": statistics.median(times) * 1e3,
        "gflops": flop / min(times) / 1e9,
        "gflops_median": flop / statistics.median(times) / 1e9,
    }


def bench_net(name, peer, steps, warmup):
    factory, mode, batch, size, classes = WORKLOADS[name]
    train = mode == "train"
    model = factory().train(train)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    labels = torch.randint(0, classes, (batch,))
    macs = macs_per_image(model, x)
    if peer in ("channels_last", "compile"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if peer == "compile":
        model = torch.compile(model)
    if train:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            opt.step()

        times = time_steps(step, steps, warmup)
    else:
        with torch.inference_mode():
            times = time_steps(lambda: model(x), steps, warmup)
    return result(name, times, macs)


def result(name, times, macs):
    _, mode, batch, size, _ = WORKLOADS[name]
    mean = sum(times) / len(times)
    img_per_s = batch / mean
    return {
        "arch": name.split("-")[0],
        "mode": mode,
        "batch": batch,
        "input": [size, size, 3],
        "img_per_s": img_per_s,
        "ms_per_step": mean * 1e3,
        "ms_per_step_median": statistics.median(times) * 1e3,
        "gflops": macs * 2.0 * (3.0 if mode == "train" else 1.0) * img_per_s / 1e9,
        "macs_per_image": macs,
    }


def export_onnx(name):
    """The workload's model as ONNX (exported once, in this process) and its multiply-adds per image."""
    factory, _, batch, size, _ = WORKLOADS[name]
    path = os.path.join(ONNX_DIR, f"{name.split('-')[0]}.onnx")
    if not os.path.exists(path):
        os.makedirs(ONNX_DIR, exist_ok=True)
        model = factory().eval()
        x = torch.rand(1, 3, size, size)
        meta = {"macs_per_image": macs_per_image(model, x)}
        tmp = path + ".tmp"
        torch.onnx.export(model, (x,), tmp, opset_version=17, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
        with open(path + ".json", "w") as f:
            json.dump(meta, f)
        os.replace(tmp, path)
    return path


def bench_onnxruntime(name, steps, warmup, threads):
    import numpy as np
    import onnxruntime as ort

    _, mode, batch, size, _ = WORKLOADS[name]
    if mode != "infer":
        sys.exit(f"--peer onnxruntime runs inference workloads only, not {name}")
    path = os.path.join(ONNX_DIR, f"{name.split('-')[0]}.onnx")
    if not os.path.exists(path):
        # export in a child process so that this one never imports PyTorch; whatever the
        # exporter prints goes to stderr, not into this process's JSON on stdout
        subprocess.run([sys.executable, __file__, "--export-onnx", name], check=True, stdout=sys.stderr)
    with open(path + ".json") as f:
        macs = json.load(f)["macs_per_image"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = (np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32) * 2 - 1)
    times = time_steps(lambda: sess.run(None, {"x": x}), steps, warmup)
    return result(name, times, macs), {"onnxruntime": ort.__version__}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=[*WORKLOADS, "matmul"])
    p.add_argument("--peer", choices=PEERS, default="eager", help="which peer configuration (default eager)")
    p.add_argument("--export-onnx", metavar="WORKLOAD", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20, help="timed steps (matmul: timed products)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args()
    if a.export_onnx:
        global torch, nn, F
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        print(export_onnx(a.export_onnx))
        return
    if not a.workload:
        p.error("--workload is required")
    if a.steps < 1 or a.warmup < 0 or a.threads < 1:
        p.error("--steps and --threads must be at least 1, --warmup at least 0")
    if a.peer == "onnxruntime":
        r, versions = bench_onnxruntime(a.workload, a.steps, a.warmup, a.threads)
        threads = a.threads
    else:
        global torch, nn, F
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
        torch.set_num_threads(a.threads)
        torch.manual_seed(0)
        if a.workload == "matmul":
            r = bench_matmul(a.steps, a.warmup)
        else:
            r = bench_net(a.workload, a.peer, a.steps, a.warmup)
        threads, versions = torch.get_num_threads(), {"torch": torch.__version__}
    r = {
        "workload": a.workload,
        "peer": a.peer,
        **r,
        "threads": threads,
        "steps": a.steps,
        "warmup": a.warmup,
        "peak_rss_mib": peak_rss_mib(),
        **versions,
    }
    name = r.get("torch") or f"onnxruntime {r.get('onnxruntime')}"
    if a.json:
        print(json.dumps(r))
    elif a.workload == "matmul":
        print(f"matmul {MATMUL_N}^3 fp32, {r['threads']} threads: {r['gflops']:.1f} GFLOP/s best "
              f"({r['ms_best']:.0f} ms), median {r['gflops_median']:.1f}, torch {r['torch']}")
    else:
        print(f"{a.workload} batch {r['batch']}, {r['threads']} threads: {r['img_per_s']:.1f} img/s, "
              f"{r['ms_per_step']:.1f} ms/step (median {r['ms_per_step_median']:.1f}), "
              f"{r['gflops']:.1f} GFLOP/s, peak RSS {r['peak_rss_mib']:.0f} MiB, {a.peer} ({name})")


if __name__ == "__main__":
    main()
