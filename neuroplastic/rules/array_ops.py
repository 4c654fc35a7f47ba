"""The few array operations the array API standard lacks, for numpy, torch and CuPy alike.

The rules are written once against the array API (``array_api_compat``), so the same code runs on
numpy, torch (CPU or CUDA) and CuPy arrays. What the standard cannot express lives here, one
function per operation, dispatched on the arrays' namespace: numpy keeps the code the rules always
used (so numpy results stay what they were), torch and CuPy use their own kernels, on the
arrays' device.
"""
from __future__ import annotations

from array_api_compat import array_namespace, is_cupy_namespace, is_numpy_namespace, is_torch_namespace

__all__ = ["add_rows_at"]


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
