"""The project's counter-based generator (src/rng.rs) in Python, standard library only:
u(name, i) = (splitmix64(fnv1a64(name) + i) >> 40) / 2**24, in [0, 1). Shared by the
fixture scripts so that Rust tests can recreate their inputs bit for bit."""

M64 = (1 << 64) - 1


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h
