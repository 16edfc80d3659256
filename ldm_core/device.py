"""The device a stack runs on and how it is used: CUDA > MPS > CPU, fp16 on CUDA, the memory
free for tensors, and the CPU kernel routing of small convolutions (bench/run.py measures it)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def module_bytes(obj) -> int:
    if isinstance(obj, torch.nn.Module):
        return sum(p.numel() * p.element_size() for p in obj.parameters()) + sum(
            b.numel() * b.element_size() for b in obj.buffers())
    return 0


def available_memory(device) -> int | None:
    """Bytes free for tensors on `device` (CUDA: free + cached; CPU: MemAvailable); None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


# ---------------------------------------------------------------- CPU kernels
# Below this many multiply-adds a convolution runs faster on PyTorch's own CPU kernel than on
# oneDNN's, whose per-call setup then costs more than it saves (bench/run.py measures it;
# docs/design-notes.md). 0 turns the switch off.
SMALL_CONV_MACS = 2 ** 23


def _conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    if (x.is_cpu and x.dim() == 4 and conv.groups == 1 and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and x.numel() * conv.out_channels * k <= SMALL_CONV_MACS):
        # PyTorch's own kernel, called directly: the one conv2d takes with oneDNN off, bit for bit, without
        # flipping that process-wide switch (stacks generating at once, pool.py, would leave it off for all)
        return torch._C._nn.thnn_conv2d(x, conv.weight, conv.kernel_size, conv.bias, conv.stride, conv.padding)
    return torch.nn.Conv2d.forward(conv, x)


def native_small_convs(module: torch.nn.Module) -> int:
    """Route `module`'s small CPU convolutions to PyTorch's native kernel (numerically the
    same convolution; the choice is made per call from the input's size). Returns how many
    convolutions it wrapped; calling it twice changes nothing."""
    n = 0
    for m in module.modules():
        if type(m) is torch.nn.Conv2d and "forward" not in m.__dict__:
            m.forward = functools.partial(_conv_forward, m)
            n += 1
    return n


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def return_freed_memory() -> None:
    """Hand the heap memory a finished request freed back to the system: glibc keeps freed
    blocks below its arenas' tops otherwise, and a server's memory would stay at its largest
    request's. A no-op where there is no glibc."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
