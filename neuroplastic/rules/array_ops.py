"""The few array operations the array API standard lacks, for numpy, torch and CuPy alike.

The rules are written once against the array API (``array_api_compat``), so the same code runs on
numpy, torch (CPU or CUDA) and CuPy arrays. What the standard cannot express lives here, one
function per operation, dispatched on the arrays' namespace: numpy keeps the code the rules always
used (so numpy results stay what they were), torch and CuPy use their own kernels, on the
arrays' device.
"""
from __future__ import annotations

from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace, is_torch_namespace

__all__ = ["add_rows_at", "torch_conv2d", "torch_conv2d_input_grad", "torch_conv2d_weight_grad"]


def add_rows_at(target, index, values):
    """``target[index[i]] += values[i]`` for every ``i``, in place; a row indexed twice gets both (scatter-add).

    ``target (N, m)``, ``index`` integer ``(n,)`` of ``target``'s namespace and device, ``values (n, m)``.
    numpy: a sparse one-hot product (``scipy.sparse``, far faster than ``np.add.at``); torch:
    ``index_add_``; CuPy: ``cupyx.scatter_add``. Returns ``target``.
    """
    xp = array_namespace(target, values)
    if is_numpy_namespace(xp):
        import numpy as np
        from scipy import sparse

        n = index.shape[0]
        onehot = sparse.csr_matrix((np.ones(n, dtype=target.dtype), (index, np.arange(n))), shape=(target.shape[0], n))
        target += onehot @ values
    elif is_torch_namespace(xp):
        target.index_add_(0, index, xp.astype(values, target.dtype, copy=False))
    elif is_cupy_namespace(xp):
        import cupyx

        cupyx.scatter_add(target, index, xp.astype(values, target.dtype, copy=False))
    else:
        raise TypeError(f"add_rows_at: no scatter-add for arrays of {xp.__name__}; known: numpy, torch, CuPy")
    return target


# -- convolutions on torch's own kernels --------------------------------------------------------------
# rules/conv.py computes a convolution and its two gradients with im2col matrix products, which any
# namespace runs; torch has kernels of its own (oneDNN on the CPU, cuDNN on a GPU) that are much faster
# and need no im2col buffer. The maps stay channels-last (N, h, w, C): a permuted view is an NCHW
# tensor in torch's channels_last memory format, which its kernels read as is.

def _nchw(a):
    return a.permute(0, 3, 1, 2)


def torch_conv2d(x, W, stride: int, padding: int):
    """:func:`neuroplastic.rules.conv.conv2d` on torch tensors: ``a (N, ho, wo, C_out)``."""
    import torch.nn.functional as F

    return F.conv2d(_nchw(x), _nchw(W), stride=stride, padding=padding).permute(0, 2, 3, 1).contiguous()


def torch_conv2d_weight_grad(x, delta, kernel: int, stride: int, padding: int):
    """:func:`neuroplastic.rules.conv.conv2d_weight_grad` on torch tensors: ``dL/dW (C_out, k, k, C_in)``."""
    from torch.nn.grad import conv2d_weight

    shape = (delta.shape[-1], x.shape[-1], kernel, kernel)
    return conv2d_weight(_nchw(x), shape, _nchw(delta), stride=stride, padding=padding).permute(0, 2, 3, 1).contiguous()


def torch_conv2d_input_grad(delta, W, stride: int, padding: int, size):
    """:func:`neuroplastic.rules.conv.conv2d_input_grad` on torch tensors: ``dL/dx (N, h, w, C_in)``."""
    from torch.nn.grad import conv2d_input

    shape = (delta.shape[0], W.shape[-1], *size)
    return conv2d_input(shape, _nchw(W), _nchw(delta), stride=stride, padding=padding).permute(0, 2, 3, 1).contiguous()
