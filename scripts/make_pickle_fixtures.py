#!/usr/bin/env python3
"""Small CIFAR "python version" pickles written by real numpy, for src/data/pickle.rs and src/data/cifar.rs.

Run on a developer machine with numpy (never in CI; the tests only read the files):
    python3 scripts/make_pickle_fixtures.py  # writes tests/fixtures/cifar-py/

The official batches were pickled by Python 2 (protocol 2, bytes as BINSTRING); the tests build those in Rust.
These are Python 3 re-pickles of the same structure: protocol 2 (bytes as _codecs.encode(text, 'latin1')) and
protocol 4 (SHORT_BINBYTES, STACK_GLOBAL, MEMOIZE, FRAME). Pixel k of image i, channel ch, at (y, x) is
    (i * 31 + ch * 97 + y * 5 + x * 3) % 251
(the rows are the CHW planes R, G, B of 1024 bytes each), as in the Rust tests.
"""

import os
import pickle

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "cifar-py")


def images(first, n):
    i = np.arange(first, first + n).reshape(n, 1, 1, 1)
    ch = np.arange(3).reshape(1, 3, 1, 1)
    y = np.arange(32).reshape(1, 1, 32, 1)
    x = np.arange(32).reshape(1, 1, 1, 32)
    return ((i * 31 + ch * 97 + y * 5 + x * 3) % 251).astype(np.uint8).reshape(n, 3072)


def write(name, obj, protocol):
    with open(os.path.join(OUT, name), "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def main():
    os.makedirs(OUT, exist_ok=True)
    # CIFAR-10 batch: 2 images (records 0, 1), labels 3, 8
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [3, 8],
        b"data": images(0, 2),
        b"filenames": [b"a_s_000001.png", b"b_s_000002.png"],
    }
    write("data_batch_py3_proto2", batch, 2)
    # the same array alone at protocol 4: 1 image (record 0)
    write("array_py3_proto4", images(0, 1), 4)
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write("batches.meta", {b"num_cases_per_batch": 10000, b"label_names": names, b"num_vis": 3072}, 2)
    # CIFAR-100 train: 1 image (record 5), fine label 42, coarse 7
    write(
        "cifar100_train_py3_proto2",
        {
            b"filenames": [b"x.png"],
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": [42],
            b"coarse_labels": [7],
            b"data": images(5, 1),
        },
        2,
    )
    meta = {
        b"fine_label_names": [("fine%d" % i).encode() for i in range(100)],
        b"coarse_label_names": [("coarse%d" % i).encode() for i in range(20)],
    }
    write("meta", meta, 2)


if __name__ == "__main__":
    main()
