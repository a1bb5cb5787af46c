"""Fast Fourier transforms (``torch.fft.*``, ``torch.stft``/``istft``) and the spectral windows.

An FFT is counted in **real** floating-point operations by the nominal count FFT benchmarks use (FFTW's benchFFT,
cuFFT's documentation): a complex transform of N points costs 5 N log2(N) (a radix-2 transform does (N/2) log2 N
complex multiplies, 6 real FLOPs each, and N log2 N complex additions, 2 each), a transform between real and
complex values (``rfft``, ``irfft``, ``hfft``, ``stft``) half of that, 2.5 N log2(N). A transform over several
dimensions is one transform of N = the product of their sizes (the sum of the 1-d transforms along each dimension
gives the same total). Each transform's count is rounded to the nearest integer (N log2 N is an integer when N is a
power of two), then multiplied by the number of transforms in the batch. The kernels are linear but not matrix
products, so the count is FLOPs, with no MACs. A normalisation (``norm="ortho"``, ``"forward"``, or the inverse's
default ``"backward"``) scales every real number of the output once: one FLOP per real output value (two per
complex element).

The aten ops: ``_fft_c2c`` (complex to complex: N from the input's sizes at ``dim``), ``_fft_r2c`` (real to
complex: N from the real input's sizes; the one-sided half is what the kernel computes, and the mirrored half a
two-sided output fills in by conjugate symmetry is a copy with a sign flip: free, as ``conj`` is), ``_fft_c2r``
(complex to real: N from the real output's sizes, ``last_dim_size`` on the last dimension). The count does not
depend on N's factors: a transform of a prime length is priced as the nominal count too.

Windows (``torch.hann_window`` and others, ``stft``'s usual argument), per element torch computes: a periodic
window (the default) is computed one element longer and its last element dropped, so M + 1 elements for a length
M (0 for M <= 1: an empty tensor, ones). Hann and Hamming, ``alpha - beta cos(2 pi n / (L - 1))``: 4 (the
argument's multiply, cos, multiply, add). Blackman, ``0.08 cos(4 x) - 0.5 cos(2 x) + 0.42`` with ``x = pi n / (L -
1)``: 9 (x's multiply, two multiplies of x, two cos, two multiplies, subtract, add). Bartlett: every element's
multiply, and the second half's ``2 - x``: 2 more each (``L - first_half`` elements, ``first_half = (L - 1) // 2 +
1``). Kaiser, ``i0(beta sqrt(|1 - ((n - a) / a)^2|)) / i0(beta)`` with ``a = (L - 1) / 2``: 10 (subtract, divide,
square, 1 - , abs, sqrt, times beta, i0, i0 of beta again, divide; an i0 is 1, as :mod:`pointwise` prices it).
"""

from __future__ import annotations

import math

from torchcost.formulas._util import first_tensor, is_floating
from torchcost.formulas.registry import ZERO, Cost, Formula, OpCall, register_many

COMPLEX_PER_POINT = 5.0  # 5 N log2 N for a complex transform
REAL_PER_POINT = 2.5  # half of it for a transform between real and complex values


def transform_flops(points: int, per_point: float) -> int:
    """One transform of ``points`` points: ``per_point * N * log2(N)``, rounded to the nearest integer."""
    if points <= 1:
        return 0
    return round(per_point * points * math.log2(points))


def _transforms(call: OpCall, t: object) -> tuple[int, int, list[int]]:
    """For the tensor ``t`` on the transforms' real side (the complex one for c2c): the number of transforms, the
    points in each (the product of the sizes at ``dim``), and those dims."""
    x = first_tensor(t)
    dims = [d % x.dim() for d in call.arg("dim")] if x.dim() else []
    points = math.prod(int(x.shape[d]) for d in dims)
    return (x.numel() // points if points else 0), points, dims


def _fft_c2c(call: OpCall) -> Cost:
    transforms, points, _ = _transforms(call, call.args[0])
    flops = transforms * transform_flops(points, COMPLEX_PER_POINT)
    if call.arg("normalization"):
        flops += 2 * transforms * points  # (a complex output element: its real and imaginary parts scaled)
    return Cost(other_flops=flops)


def _fft_r2c(call: OpCall) -> Cost:
    x = first_tensor(call.args[0])
    if not is_floating(x):
        return ZERO
    transforms, points, dims = _transforms(call, x)
    flops = transforms * transform_flops(points, REAL_PER_POINT)
    if call.arg("normalization") and dims:
        last = int(x.shape[dims[-1]])
        flops += 2 * (x.numel() // last) * (last // 2 + 1)  # (the one-sided half the kernel computes and scales)
    return Cost(other_flops=flops)


def _fft_c2r(call: OpCall) -> Cost:
    transforms, points, _ = _transforms(call, call.out)
    flops = transforms * transform_flops(points, REAL_PER_POINT)
    if call.arg("normalization"):
        flops += transforms * points
    return Cost(other_flops=flops)


register_many(["aten::_fft_c2c"], _fft_c2c)
register_many(["aten::_fft_r2c"], _fft_r2c)
register_many(["aten::_fft_c2r"], _fft_c2r)


def _computed(call: OpCall, out_len: int) -> int:
    """The window's length as torch computes it: one more than asked for a periodic window (the default), whose
    last element is dropped; 0 for lengths 0 and 1 (an empty tensor, ones)."""
    if out_len <= 1:
        return 0
    periodic = call.arg("periodic")
    return out_len + 1 if periodic is None or periodic else out_len


def _per_window_element(per: int) -> Formula:
    def cost(call: OpCall) -> Cost:
        out = first_tensor(call.out)
        return Cost(other_flops=per * _computed(call, out.numel())) if is_floating(out) else ZERO

    return cost


def _bartlett(call: OpCall) -> Cost:
    out = first_tensor(call.out)
    if not is_floating(out):
        return ZERO
    length = _computed(call, out.numel())
    first_half = ((length - 1) >> 1) + 1 if length else 0
    return Cost(other_flops=length + 2 * (length - first_half))


register_many(["aten::hann_window", "aten::hamming_window"], _per_window_element(4))
register_many(["aten::blackman_window"], _per_window_element(9))
register_many(["aten::kaiser_window"], _per_window_element(10))
register_many(["aten::bartlett_window"], _bartlett)
