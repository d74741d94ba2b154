"""Fast kernels for the ops that dominate a ViT step, chosen by what the running machine can do.

:mod:`.cpu`: fp32 (and native-bf16) linear layers and long attention on oneDNN or ATen, timed per
shape and cached per machine (``VIDEOHPM_CPU_KERNELS``). Everything falls back to the plain
PyTorch op where a kernel does not apply (CUDA, other dtypes, short sequences).
"""
from .cpu import SETTINGS, attention, chosen_kernels, cpu_kernels, linear, set_cpu_kernels

__all__ = ["SETTINGS", "attention", "chosen_kernels", "cpu_kernels", "linear", "set_cpu_kernels"]
