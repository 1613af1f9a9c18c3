#!/usr/bin/env python3
"""The step-time model of docs/SCALING.md: data-parallel training over W machines.

T_step(W) = T_compute + T_allreduce - T_hidden
  T_compute   = b * t_img                          (b images per machine and step; t_img measured here)
  T_allreduce = 2 (W-1)/W * G / bw + 2 (W-1) * n_buckets * alpha      (ring all-reduce, G gradient bytes)
  T_hidden    = min(T_allreduce - last bucket, h * T_backward)  with overlap; 0 without (today)
efficiency = T_compute / T_step (weak scaling: b fixed per machine, the global batch W*b).
Strong scaling (global batch fixed) divides b by W.

Usage: python3 scripts/scaling-model.py > tables (markdown)
"""

# measured on this machine (2 cores, AVX-512): ms per image of a training step, parameters
NETS = {
    # name: (ms per training image on one machine, parameters, per-machine batch b, global batch of the paper)
    "ResNet-20 (CIFAR)": (1.59, 272_474, 128, 128),
    "ResNet-110 (CIFAR)": (9.68, 1_730_714, 128, 128),
    "ResNet-50 (ImageNet, 224)": (165.0, 25_557_032, 32, 256),
}
BUCKET = 25 << 20
ALPHA = 20e-6  # seconds per message hop (TCP over Ethernet; InfiniBand ~2 us)
BACKWARD = 2.0 / 3.0  # backward's share of a training step (2 of the 3 passes)
WORLDS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def step(t_img, params, b, w, gbit, overlap):
    g = 4.0 * params
    t_c = b * t_img
    if w == 1:
        return t_c, 0.0, t_c
    buckets = max(1, -(-int(g) // BUCKET))
    t_ar = 2 * (w - 1) / w * g / (gbit * 1e9 / 8) + 2 * (w - 1) * buckets * ALPHA
    hidden = 0.0
    if overlap:
        last = t_ar / buckets  # the first layers' bucket is ready only when backward ends
        hidden = min(t_ar - last, BACKWARD * t_c) if buckets > 1 else min(t_ar, BACKWARD * t_c) * 0.5
    t = t_c + t_ar - hidden
    return t_c, t_ar, t


def table(strong):
    out = []
    for gbit in (10, 100):
        for name, (ms, params, b, global_b) in NETS.items():
            row = []
            below = None
            for w in WORLDS:
                bb = global_b / w if strong else b
                if strong and bb < 1:
                    row.append("-")
                    continue
                t_c, t_ar, t = step(ms / 1e3, params, bb, w, gbit, overlap=False)
                _, _, t_o = step(ms / 1e3, params, bb, w, gbit, overlap=True)
                e, e_o = t_c / t, t_c / t_o
                if below is None and e < 0.9:
                    below = w
                row.append(f"{100 * e:.0f} / {100 * e_o:.0f}")
            out.append((gbit, name, row, below))
    return out


def main():
    head = "| link | network | " + " | ".join(f"W={w}" for w in WORLDS) + " | < 90% from |"
    sep = "|" + "---|" * (len(WORLDS) + 3)
    for strong, title in ((False, "weak scaling: per-machine batch fixed (b = 128 CIFAR, 32 ImageNet)"),
                          (True, "strong scaling: global batch fixed (128 CIFAR, 256 ImageNet)")):
        print(f"\nEfficiency %, {title}; no overlap / with overlap\n")
        print(head)
        print(sep)
        for gbit, name, row, below in table(strong):
            print(f"| {gbit} Gbit/s | {name} | " + " | ".join(row) + f" | {below if below else 'never'} |")
    print("\nAll-reduce time per step (ms, ring, no overlap) and gradient size\n")
    print("| network | gradient MB | " + " | ".join(f"W={w} 10G / 100G" for w in (2, 8, 64, 256)) + " |")
    print("|---|---|" + "---|" * 4)
    for name, (ms, params, b, _) in NETS.items():
        cells = []
        for w in (2, 8, 64, 256):
            t10 = step(ms / 1e3, params, b, w, 10, False)[1]
            t100 = step(ms / 1e3, params, b, w, 100, False)[1]
            cells.append(f"{1e3 * t10:.1f} / {1e3 * t100:.1f}")
        print(f"| {name} | {4 * params / 1e6:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
