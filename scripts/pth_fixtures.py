#!/usr/bin/env python3
"""Small PyTorch files for the .pth reader tests (src/weights/tests.rs).

Run on a developer machine with PyTorch (never in CI):
    $TORCH_VENV/bin/python scripts/pth_fixtures.py

Writes tests/fixtures/pth/:
  zip.pth      torch.save of a wrapped, prefixed state_dict (zip format)
  legacy.pth   the same object in the legacy format (_use_new_zipfile_serialization=False)
  expected.json  every tensor's shape and values (row-major) as PyTorch reads them back
  evil.pth     a zip-format file whose pickle calls os.system (never run by our reader)
  legacy_optim.pth  legacy format, {"optimizer": ..., "state_dict": ..., "epoch"}: the optimizer's
               float64 / int64 storages come before and between the state_dict's
The object: {"epoch": 3, "state_dict": OrderedDict of "module."-prefixed tensors}
with f32, f64, f16, bf16 and int64 tensors, a transposed (non-contiguous) view,
two tensors sharing one storage at different offsets, and a 0-d scalar.
"""
import collections
import json
import os
import sys

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "pth")


def state():
    base = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2) / 8 - 1
    shared = torch.linspace(-2, 2, 10)
    sd = collections.OrderedDict()
    sd["module.conv1.weight"] = base
    sd["module.t.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # stride (1, 3)
    sd["module.a"] = shared[2:6]  # offset 2 into a shared storage
    sd["module.b"] = shared[5:]
    sd["module.d"] = torch.tensor([1.5, -2.25, 1e-3], dtype=torch.float64)
    sd["module.h"] = torch.tensor([0.5, -1.0, 65504.0, 6e-8], dtype=torch.float16)
    sd["module.bf"] = torch.tensor([1.0, -3.5, 0.0078125], dtype=torch.bfloat16)
    sd["module.bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    return {"epoch": 3, "state_dict": sd}


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/resnet-evil-ran",))


def main():
    os.makedirs(OUT, exist_ok=True)
    obj = state()
    torch.save(obj, os.path.join(OUT, "zip.pth"))
    torch.save(obj, os.path.join(OUT, "legacy.pth"), _use_new_zipfile_serialization=False)
    back = torch.load(os.path.join(OUT, "legacy.pth"), weights_only=True)["state_dict"]
    expected = {k: {"shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in back.items()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    torch.save({"conv1.weight": torch.zeros(1, 1, 1, 1), "x": Evil()}, os.path.join(OUT, "evil.pth"))
    # legacy format with optimizer state beside the state_dict: storages of other element sizes in between
    opt = {"state": {0: {"momentum_buffer": torch.arange(5, dtype=torch.float64), "step": torch.tensor(9)}}}
    torch.save({"optimizer": opt, "state_dict": obj["state_dict"], "epoch": 3},
               os.path.join(OUT, "legacy_optim.pth"), _use_new_zipfile_serialization=False)
    for n in sorted(os.listdir(OUT)):
        print(n, os.path.getsize(os.path.join(OUT, n)), "bytes")


if __name__ == "__main__":
    sys.exit(main())
