#!/usr/bin/env python3
"""Per-shape convolution GFLOP/s of the peers, beside examples/conv_bench.rs.

Usage (the venv of scripts/torch-venv.sh):
    $PY bench/conv_peers.py [--batch 16] [--threads 2] [--reps 7] [--shapes imagenet|cifar]

For every distinct convolution shape of ResNet-50 v1.5 (or of the CIFAR
ResNets), the same list and batch as `cargo run --release --example
conv_bench -- BATCH imagenet`:
  oneDNN   PyTorch with input and weights in channels_last: forward
           (F.conv2d under inference_mode), backward-data and weight gradient
           (aten.convolution_backward with one output mask each), no bias.
  MLAS     onnxruntime (CPU provider, ORT_ENABLE_ALL, intra-op threads =
           --threads) on a one-node ONNX model: Conv with the weights as an
           initializer; forward only.
Best of --reps calls after one warm-up; 2 FLOPs per multiply-add. Prints the
CPU model first, one line per shape after.
"""
import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

IMAGENET = [  # input side, cin, cout, k, stride, pad
    (224, 3, 64, 7, 2, 3), (56, 64, 64, 1, 1, 0), (56, 64, 64, 3, 1, 1), (56, 64, 256, 1, 1, 0),
    (56, 256, 64, 1, 1, 0), (56, 256, 128, 1, 1, 0), (56, 128, 128, 3, 2, 1), (28, 128, 512, 1, 1, 0),
    (56, 256, 512, 1, 2, 0), (28, 512, 128, 1, 1, 0), (28, 128, 128, 3, 1, 1), (28, 512, 256, 1, 1, 0),
    (28, 256, 256, 3, 2, 1), (28, 512, 1024, 1, 2, 0), (14, 256, 256, 3, 1, 1), (14, 1024, 256, 1, 1, 0),
    (14, 256, 1024, 1, 1, 0), (14, 1024, 512, 1, 1, 0), (14, 512, 512, 3, 2, 1), (14, 1024, 2048, 1, 2, 0),
    (7, 512, 512, 3, 1, 1), (7, 2048, 512, 1, 1, 0), (7, 512, 2048, 1, 1, 0),
]
CIFAR = [(32, 3, 16, 3, 1, 1), (32, 16, 16, 3, 1, 1), (32, 16, 32, 3, 2, 1), (16, 32, 32, 3, 1, 1),
         (16, 32, 64, 3, 2, 1), (8, 64, 64, 3, 1, 1)]


def best(reps, f):
    f()
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def ort_conv(n, h, ci, co, k, s, p, w, threads):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, ci, h, h])
    oh = (h + 2 * p - k) // s + 1
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, co, oh, oh])
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p])
    g = helper.make_graph([node], "conv", [x], [y], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def main():
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--batch", type=int, default=16)
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--reps", type=int, default=7)
    a.add_argument("--shapes", choices=("imagenet", "cifar"), default="imagenet")
    a = a.parse_args()
    torch.set_num_threads(a.threads)
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    print(f"{cpu}; batch {a.batch}, {a.threads} threads; GFLOP/s (ms) per call; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}")
    print(f"{'conv':<28} {'oneDNN fwd':>14} {'oneDNN bwd-data':>16} {'oneDNN bwd-w':>14} {'MLAS fwd':>14}")
    n = a.batch
    for h, ci, co, k, s, p in IMAGENET if a.shapes == "imagenet" else CIFAR:
        cl = torch.channels_last
        x = (torch.rand(n, ci, h, h) * 2 - 1).contiguous(memory_format=cl)
        w = (torch.rand(co, ci, k, k) * 2 - 1).contiguous(memory_format=cl)
        y = F.conv2d(x, w, stride=s, padding=p)
        dy = torch.rand_like(y).contiguous(memory_format=cl)
        oh = y.shape[2]
        gf = 2.0 * n * oh * oh * co * ci * k * k / 1e9
        with torch.inference_mode():
            tf = best(a.reps, lambda: F.conv2d(x, w, stride=s, padding=p))

        def bwd(mask):
            return torch.ops.aten.convolution_backward(dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

        td = best(a.reps, lambda: bwd([True, False, False]))
        tw = best(a.reps, lambda: bwd([False, True, False]))
        sess = ort_conv(n, h, ci, co, k, s, p, w.contiguous().numpy(), a.threads)
        xn = np.ascontiguousarray(x.contiguous().numpy())
        to = best(a.reps, lambda: sess.run(None, {"x": xn}))
        cell = lambda t: f"{gf / t:.0f} ({t * 1e3:.2f})"  # noqa: E731
        print(f"{f'{h}x{h} {ci}->{co} k{k}/{s}':<28} {cell(tf):>14} {cell(td):>16} {cell(tw):>14} {cell(to):>14}")


if __name__ == "__main__":
    main()
