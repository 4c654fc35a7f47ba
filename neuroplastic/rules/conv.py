r"""Convolutional layers of the rate engine: 3x3 convolution, 2x2 max-pool and ReLU on BLAS.

Feature maps are channels-last, ``(N, h, w, C)``, and a kernel is
``W (C_out, k, k, C_in)``, so that the im2col matrix of a map multiplies
``W.reshape(C_out, -1)`` directly (one matrix product per layer, no transposes):

.. math::

    a_{n,r,c,o} = \sum_{i,j,\iota} W_{o,i,j,\iota}\; x_{n,\,rs+i-p,\,cs+j-p,\,\iota}
    \qquad (x = 0 \text{ outside the map: zero padding } p,\ \text{stride } s)

The weight gradient is the same sum read the other way, a Hebbian product
summed over every location that shares the kernel (weight sharing):

.. math::

    \frac{\partial L}{\partial W_{o,i,j,\iota}} = \sum_{n,r,c} \delta_{n,r,c,o}\; x_{n,\,rs+i-p,\,cs+j-p,\,\iota},
    \qquad \delta = \partial L / \partial a

CLAPP layers treat their input as data, so no error crosses them; the
end-to-end methods of :mod:`neuroplastic.rules.hinge_methods` do send it down, through the
input gradient, the transpose of im2col (col2im): every window's share
``sum_o delta W_o`` is added back where the window was read,

.. math::

    \frac{\partial L}{\partial x_{n,u,v,\iota}} = \sum_{r,c,o,i,j\,:\; rs+i-p=u,\ cs+j-p=v}
    \delta_{n,r,c,o}\; W_{o,i,j,\iota}

The im2col matrix of a whole layer is large (VGG-6's second layer: 1568
patches x 256 locations x 1152 = 1.8 GB in float32), so the products run over
blocks of maps whose im2col matrix fits in ``block_bytes``; each block is cut
from k x k shifted slices of the input (array-API friendly, no ``as_strided``)
into one reused buffer whose zero-padding border is written once. On torch tensors the three
functions call torch's own convolution kernels instead (:mod:`neuroplastic.rules.array_ops`): the
same sums, faster, and without the buffer.
"""
from __future__ import annotations

from array_api_compat import array_namespace, is_numpy_namespace, is_torch_namespace
from array_api_compat import device as array_device

from . import array_ops

__all__ = ["BLOCK_BYTES", "out_size", "im2col", "conv2d", "conv2d_weight_grad", "conv2d_input_grad", "relu_",
           "maxpool2", "maxpool2_backward"]

#: Size of the im2col buffer of one block of maps (bytes): big enough for efficient BLAS calls,
#: small next to the feature maps of a deep layer.
BLOCK_BYTES = 32 * 1024 * 1024


#: Output maps of at least this many locations use torch's own convolution kernels on torch tensors;
#: smaller ones (VGG-6's last layer: 2 x 2) im2col and one matrix product, which is several times
#: faster there (the kernels are tuned for large maps; measured on oneDNN, 2 threads).
TORCH_KERNEL_MIN_LOCATIONS = 16


def _torch_kernel(xp, locations: int) -> bool:
    return is_torch_namespace(xp) and locations >= TORCH_KERNEL_MIN_LOCATIONS


def out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output side of a convolution: ``(n + 2 p - k) // s + 1``."""
    m = (n + 2 * padding - kernel) // stride + 1
    if m < 1:
        raise ValueError(f"a {kernel} x {kernel} kernel with stride {stride} and padding {padding} does not fit "
                         f"a map of side {n}")
    return m


def _valid(n_in: int, n_out: int, offset: int, stride: int, padding: int):
    """Output indices ``[lo, hi)`` whose input index ``o s + offset - p`` is inside ``[0, n_in)``; the first of those."""
    lo = max(0, -((offset - padding) // stride))             # ceil((p - offset) / s)
    hi = min(n_out, (n_in - 1 + padding - offset) // stride + 1)
    return lo, max(lo, hi), lo * stride + offset - padding


def im2col(x, kernel: int = 3, stride: int = 1, padding: int = 1, out=None):
    """Every kernel window of the maps ``x (N, h, w, C)``: ``cols (N, ho, wo, k, k, C)``.

    ``cols[n, r, c, i, j] = x[n, r s + i - p, c s + j - p]`` and 0 in the padding.
    ``out`` (same shape) is reused if given; its padding entries must already be 0
    (they are never written, so a buffer zeroed once serves every block).
    """
    xp = array_namespace(x)
    N, h, w, C = x.shape
    ho, wo = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
    cols = xp.zeros((N, ho, wo, kernel, kernel, C), dtype=x.dtype, device=array_device(x)) if out is None else out
    for i in range(kernel):
        r0, r1, ri = _valid(h, ho, i, stride, padding)
        for j in range(kernel):
            c0, c1, ci = _valid(w, wo, j, stride, padding)
            if r1 > r0 and c1 > c0:
                cols[:, r0:r1, c0:c1, i, j, :] = x[:, ri:ri + (r1 - r0 - 1) * stride + 1:stride,
                                                   ci:ci + (c1 - c0 - 1) * stride + 1:stride, :]
    return cols


def _blocks(x, kernel, stride, padding, block_bytes):
    """Yield ``(n0, n1, cols2)``: the im2col matrix (rows = output locations) of maps ``n0:n1``."""
    xp = array_namespace(x)
    N, h, w, C = x.shape
    ho, wo = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
    K = kernel * kernel * C
    per_map = ho * wo * K * x.dtype.itemsize if hasattr(x.dtype, "itemsize") else ho * wo * K * 4
    nb = max(1, min(N, block_bytes // max(per_map, 1)))
    buf = xp.zeros((nb, ho, wo, kernel, kernel, C), dtype=x.dtype, device=array_device(x))
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        cols = im2col(x[n0:n1], kernel, stride, padding, out=buf[:n1 - n0])
        yield n0, n1, xp.reshape(cols, ((n1 - n0) * ho * wo, K))


def conv2d(x, W, stride: int = 1, padding: int = 1, *, block_bytes: int = BLOCK_BYTES):
    """Drive of a convolutional layer (no bias): ``a (N, ho, wo, C_out)`` from maps ``x (N, h, w, C_in)``."""
    xp = array_namespace(x, W)
    N, h, w, _ = x.shape
    C_out, kernel = W.shape[0], W.shape[1]
    ho, wo = out_size(h, kernel, stride, padding), out_size(w, kernel, stride, padding)
    if _torch_kernel(xp, ho * wo):
        return array_ops.torch_conv2d(x, W, stride, padding)        # torch's own kernel, no im2col
    W2t = xp.reshape(W, (C_out, -1)).T
    a = xp.empty((N, ho, wo, C_out), dtype=x.dtype, device=array_device(x))
    a2 = xp.reshape(a, (N * ho * wo, C_out))
    numpy = is_numpy_namespace(xp)
    for n0, n1, cols2 in _blocks(x, kernel, stride, padding, block_bytes):
        rows = slice(n0 * ho * wo, n1 * ho * wo)
        if numpy:
            xp.matmul(cols2, W2t, out=a2[rows])           # straight into the map, no temporary
        else:
            a2[rows] = cols2 @ W2t
    return a


def conv2d_weight_grad(x, delta, kernel: int = 3, stride: int = 1, padding: int = 1, *,
                       block_bytes: int = BLOCK_BYTES):
    """``dL/dW (C_out, k, k, C_in)`` from the input ``x (N, h, w, C_in)`` and ``delta = dL/da (N, ho, wo, C_out)``."""
    xp = array_namespace(x, delta)
    N, ho, wo, C_out = delta.shape
    C_in = x.shape[-1]
    if _torch_kernel(xp, ho * wo):
        return array_ops.torch_conv2d_weight_grad(x, delta, kernel, stride, padding)
    d2 = xp.reshape(delta, (N * ho * wo, C_out))
    grad = xp.zeros((C_out, kernel * kernel * C_in), dtype=x.dtype, device=array_device(x))
    for n0, n1, cols2 in _blocks(x, kernel, stride, padding, block_bytes):
        grad += d2[n0 * ho * wo:n1 * ho * wo].T @ cols2
    return xp.reshape(grad, (C_out, kernel, kernel, C_in))


def _input_size(n_out: int, n_in, kernel: int, stride: int, padding: int, axis: str) -> int:
    """Side of the input a convolution read to give ``n_out``: implied by stride 1, checked when given."""
    if n_in is None:
        if stride != 1:
            raise ValueError(f"with stride {stride}, several input sizes give an output of side {n_out}; "
                             "pass size=(h, w) of the input")
        n_in = n_out + kernel - 1 - 2 * padding
        if n_in < 1:
            raise ValueError(f"no input of a {kernel} x {kernel} kernel with padding {padding} gives an output "
                             f"of side {n_out}")
    elif out_size(n_in, kernel, stride, padding) != n_out:
        raise ValueError(f"an input {axis} of {n_in} gives an output {axis} of "
                         f"{out_size(n_in, kernel, stride, padding)}, not {n_out} (kernel {kernel}, stride "
                         f"{stride}, padding {padding})")
    return int(n_in)


def conv2d_input_grad(delta, W, stride: int = 1, padding: int = 1, *, size=None, block_bytes: int = BLOCK_BYTES):
    """``dL/dx (N, h, w, C_in)`` from ``delta = dL/da (N, ho, wo, C_out)`` and the kernel ``W``: col2im of ``delta W``.

    ``size = (h, w)`` of the input; stride 1 implies it (``h = ho + k - 1 - 2 p``), a larger
    stride does not (several inputs give the same output), so there it must be given. Pass a
    feedback kernel as ``W`` to send the error back through it instead (feedback alignment).
    """
    xp = array_namespace(delta, W)
    N, ho, wo, C_out = delta.shape
    C_out_w, kernel, _, C_in = W.shape
    if C_out_w != C_out:
        raise ValueError(f"delta has {C_out} channels and the kernel {C_out_w} output channels")
    h_in, w_in = (None, None) if size is None else size
    h = _input_size(ho, h_in, kernel, stride, padding, "height")
    w = _input_size(wo, w_in, kernel, stride, padding, "width")
    if _torch_kernel(xp, ho * wo):
        return array_ops.torch_conv2d_input_grad(delta, W, stride, padding, (h, w))
    W2 = xp.reshape(W, (C_out, kernel * kernel * C_in))
    dx = xp.zeros((N, h, w, C_in), dtype=delta.dtype, device=array_device(delta))
    per_map = ho * wo * kernel * kernel * C_in * (delta.dtype.itemsize if hasattr(delta.dtype, "itemsize") else 4)
    nb = max(1, min(N, block_bytes // max(per_map, 1)))
    windows = [(i, j, _valid(h, ho, i, stride, padding), _valid(w, wo, j, stride, padding))
               for i in range(kernel) for j in range(kernel)]
    for n0 in range(0, N, nb):
        n1 = min(N, n0 + nb)
        cols = xp.reshape(xp.reshape(delta[n0:n1], ((n1 - n0) * ho * wo, C_out)) @ W2,
                          (n1 - n0, ho, wo, kernel, kernel, C_in))
        for i, j, (r0, r1, ri), (c0, c1, ci) in windows:      # im2col's slices, written back and summed
            if r1 > r0 and c1 > c0:
                dx[n0:n1, ri:ri + (r1 - r0 - 1) * stride + 1:stride,
                   ci:ci + (c1 - c0 - 1) * stride + 1:stride, :] += cols[:, r0:r1, c0:c1, i, j, :]
    return dx


def relu_(a):
    """rho(a) = max(a, 0), in place where the namespace allows it (numpy, torch); returns the result."""
    xp = array_namespace(a)
    if is_numpy_namespace(xp):
        return xp.maximum(a, 0.0, out=a)
    if is_torch_namespace(xp):
        return a.clamp_min_(0.0)
    return xp.maximum(a, xp.zeros_like(a))


def maxpool2(z):
    """2 x 2 max-pool with stride 2 of ``z (N, h, w, C)``; an odd last row or column is dropped (as torch does)."""
    xp = array_namespace(z)
    N, h, w, C = z.shape
    h2, w2 = h // 2, w // 2
    if h2 == 0 or w2 == 0:
        raise ValueError(f"a 2 x 2 max-pool needs maps of side >= 2, got {h} x {w}")
    v = xp.reshape(z[:, :2 * h2, :2 * w2, :], (N, h2, 2, w2, 2, C))
    return xp.max(xp.max(v, axis=4), axis=2)


def maxpool2_backward(z, pooled, delta, *, relu: bool = False, out=None):
    """Route ``delta = dL/dpooled`` to the first maximum of each window: ``dL/dz (N, h, w, C)``.

    The first maximum in row-major window order receives the gradient, as in
    torch's max-pool. With ``relu=True`` the routed value is also multiplied by
    rho'(a) of the winner, i.e. by ``pooled > 0`` (``z = relu(a)``, and relu and
    max commute). ``out`` may be ``z`` itself: every window is read before it is
    overwritten, so the backward pass reuses the forward map's memory.
    """
    xp = array_namespace(z, pooled, delta)
    N, h, w, C = z.shape
    h2, w2 = pooled.shape[1], pooled.shape[2]
    if out is None:
        out = xp.zeros_like(z)
    else:
        out[:, 2 * h2:, :, :] = 0.0                           # dropped odd row / column: no gradient
        out[:, :2 * h2, 2 * w2:, :] = 0.0
    zero = xp.zeros((), dtype=delta.dtype, device=array_device(delta))
    if relu:
        delta = xp.where(pooled > 0, delta, zero)
    taken = None
    for i in (0, 1):
        for j in (0, 1):
            v = z[:, i:2 * h2:2, j:2 * w2:2, :]
            hit = v == pooled
            if taken is None:
                taken = hit
            else:
                hit = hit & ~taken
                taken = taken | hit
            out[:, i:2 * h2:2, j:2 * w2:2, :] = xp.where(hit, delta, zero)
    return out
