"""What `train.reproducibility: strict` pins so that training gives the same bytes on any x86 CPU.

Float results on a CPU depend on which kernels run, and the kernels are picked per processor at
process start: PyTorch's own vectorized ops by `ATEN_CPU_CAPABILITY` (default / avx2 / avx512,
the best the CPU has unless capped), MKL's GEMM by its dispatcher (`MKL_CBWR` fixes one code
branch; on non-Intel CPUs only AUTO and COMPATIBLE are honoured, AVX2 silently falls back to
AUTO), oneDNN by `ONEDNN_MAX_CPU_ISA`, and every parallel reduction by the thread count. Strict
mode caps all of them to one level every AVX2 machine (Intel Haswell 2013+, AMD Zen 2017+) has,
runs one thread and turns on `torch.use_deterministic_algorithms`. docs/benchmarks.md has what it
costs and what it buys (measured by emulation on one AVX-512 machine).

These are read when the libraries initialize, so they must be in the environment before the
process imports torch: the train stage re-executes itself with `strict_environ(...)` (see
stages/train.py); this module only says what the environment must hold and checks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

STRICT_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",   # PyTorch's vectorized kernels (softmax, GELU, LayerNorm, reductions, AdamW)
    "ONEDNN_MAX_CPU_ISA": "AVX2",    # oneDNN: computes BERT's GELU forward and backward (ONEDNN_VERBOSE=1 shows it)
    "MKL_CBWR": "COMPATIBLE",        # MKL's GEMM on one branch: the only fixed one MKL honours on Intel and AMD
    "OMP_NUM_THREADS": "1",          # one thread: reductions always split the same way
    "MKL_NUM_THREADS": "1",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # deterministic algorithms need it on CUDA (run to run; GPU != CPU bytes)
}
"""The environment strict mode runs under; each value is read once, when its library initializes."""

STRICT_THREADS = 1
"""torch intra-op threads in strict mode (as OMP_NUM_THREADS above)."""


def strict_env_missing(environ: Mapping[str, str]) -> dict[str, str]:
    """The strict pins `environ` does not hold yet, {name: wanted value}; {} when the process is pinned."""
    return {k: v for k, v in STRICT_ENV.items() if environ.get(k) != v}


def strict_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with the strict pins applied (they override what was there)."""
    return {**environ, **STRICT_ENV}


def apply_strict_in_process() -> None:
    """The in-process half of strict mode: deterministic algorithms and one intra-op thread."""
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(STRICT_THREADS)


def runtime() -> dict:
    """What this process computes with, for the run's metrics: PyTorch's CPU kernel level and whether
    deterministic algorithms are on."""
    import torch

    return {"cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}


def weights_sha256(state_dict: Mapping) -> str:
    """sha256 over the weights themselves (name, dtype, shape, raw bytes, in name order): equal
    exactly when the tensors are bit-identical, independent of the file format that stores them."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous().view(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state_dict[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
