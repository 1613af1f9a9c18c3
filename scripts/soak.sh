#!/usr/bin/env bash
# Soak test of the run directory (not in CI; a few minutes): a small training run is stopped
# KILLS times (default 200) at random instants by a random one of kill -9, SIGTERM and SIGHUP, and
# resumed after each; then it is finished and compared with the same run done without a stop:
# the last checkpoints must be bit-identical (every tensor, the optimizer state, the metadata) and
# metrics.jsonl must hold exactly the uninterrupted run's lines (one per logged iteration).
#
#   bash scripts/soak.sh [KILLS] [ITERS]        (RESNET_BIN=path: test that binary)
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-200}
iters=${2:-20000}
# RESNET_BIN: a binary to test instead of this tree's release build
if [ -z "${RESNET_BIN:-}" ]; then
    cargo build --release --quiet
fi
bin=${RESNET_BIN:-$PWD/target/release/resnet}
work=$(mktemp -d /tmp/resnet-soak.XXXXXX)
trap 'rm -rf "$work"' EXIT

# 480 training and 96 test 28x28 images whose brightness encodes the label (learnable)
python3 - "$work/data" <<'EOF'
import os, struct, sys
d = sys.argv[1]; os.makedirs(d)
def write(prefix, n):
    img = bytes([0, 0, 8, 3]) + struct.pack(">III", n, 28, 28)
    img += bytes((i * 7 % 10 * 25 + (p * 31 + i * 17) % 20) % 256 for i in range(n) for p in range(784))
    lab = bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes(i * 7 % 10 for i in range(n))
    open(f"{d}/{prefix}-images-idx3-ubyte", "wb").write(img)
    open(f"{d}/{prefix}-labels-idx1-ubyte", "wb").write(lab)
write("train", 480); write("t10k", 96)
EOF

args=(train --arch resnet8 --data "$work/data" --batch 16 --iters "$iters" --log-every 5 --ckpt-every 50 --quiet)
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores: reference run of $iters iterations ..."
start=$(date +%s)
"$bin" "${args[@]}" --out "$work/straight" >/dev/null
echo "  $(( $(date +%s) - start )) s"

declare -A seen=([KILL]=0 [TERM]=0 [HUP]=0)
signals=(KILL TERM HUP)
for ((k = 1; k <= kills; k++)); do
    # the first start too may be stopped before it wrote its configuration
    if [ -f "$work/soak/config.toml" ]; then
        "$bin" train --resume "$work/soak" --quiet >/dev/null 2>"$work/stderr" &
    else
        "$bin" "${args[@]}" --out "$work/soak" >/dev/null 2>"$work/stderr" &
    fi
    pid=$!
    # a random instant: 0 to 1.5 s after the start (start-up, data loading, training, checkpoints)
    sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
    (( RANDOM % 2 )) && sleep "0.$((RANDOM % 500))"
    sig=${signals[RANDOM % 3]}
    kill -s "$sig" "$pid" 2>/dev/null || true
    set +e
    wait "$pid" 2>/dev/null
    code=$?
    set -e
    case "$sig:$code" in
        KILL:137 | TERM:143 | HUP:129) seen[$sig]=$((seen[$sig] + 1)) ;;
        *:0)
            echo "the run finished after $k stops: raise ITERS" >&2
            exit 1
            ;;
        *)
            echo "stop $k: SIG$sig gave exit code $code" >&2
            cat "$work/stderr" >&2
            exit 1
            ;;
    esac
done
"$bin" train --resume "$work/soak" --quiet >/dev/null
echo "stops: ${seen[KILL]} kill -9, ${seen[TERM]} SIGTERM, ${seen[HUP]} SIGHUP; then resumed to the end"

python3 - "$work/straight" "$work/soak" <<'EOF'
import json, struct, sys
def checkpoint(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = header.pop("__metadata__")
    meta["meta"] = json.loads(meta["meta"])
    data = b[8 + n:]
    return meta, {k: (v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}
(ma, ta), (mb, tb) = (checkpoint(f"{d}/last.safetensors") for d in sys.argv[1:])
assert ma == mb, f"metadata differs:\n{ma}\n{mb}"
assert ta.keys() == tb.keys()
bad = [k for k in ta if ta[k] != tb[k]]
assert not bad, f"tensors differ: {bad}"
def keys(d):
    return [(l["iter"], l.get("split", "train")) for l in map(json.loads, open(f"{d}/metrics.jsonl"))]
ka, kb = keys(sys.argv[1]), keys(sys.argv[2])
assert len(set(kb)) == len(kb), "a metrics line is there twice"
extra, missing = sorted(set(kb) - set(ka)), sorted(set(ka) - set(kb))
assert ka == kb, f"the metrics lines differ from the uninterrupted run's: extra {extra[:10]}, missing {missing[:10]}"
print(f"bit-identical: {len(ta)} tensors at iteration {ma['meta']['iteration']}; "
      f"metrics.jsonl: the same {len(kb)} lines, each once")
EOF
