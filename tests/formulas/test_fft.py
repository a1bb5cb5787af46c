"""FFTs and spectral windows (formulas/fft.py): a complex transform of N points 5 N log2 N real FLOPs, a transform
between real and complex values 2.5 N log2 N, rounded per transform, times the transforms in the batch; a
normalisation one FLOP per real output value (two per complex element); no MACs. Windows: hann/hamming 4, blackman
9 per computed element (a periodic window computes M + 1), bartlett 1 + 2 on its second half.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.formulas._check import fn_both
from torchcost.formulas.fft import transform_flops


def _only(r: object, op: str) -> int:
    return {o.op: o.flops for o in r.ops}[op]  # type: ignore[attr-defined]


def test_rfft_of_a_batch() -> None:
    # (3, 5, 16) real, rfft along the last dim: 15 transforms of N = 16: 2.5 * 16 * log2 16 = 160 each: 2,400;
    # norm "backward" leaves the forward transform unscaled
    r = fn_both(lambda x: torch.fft.rfft(x), torch.randn(3, 5, 16))
    assert r.macs == 0
    assert _only(r, "aten::_fft_r2c") == r.flops == 15 * 160 == 2_400


def test_complex_fft_and_its_normalisation() -> None:
    # complex (2, 8): 2 transforms of N = 8: 5 * 8 * 3 = 120 each: 240; norm="ortho" scales the 16 complex outputs,
    # 2 real multiplies each: 32; total 272
    x = torch.randn(2, 8, dtype=torch.complex64)
    r = fn_both(lambda t: torch.fft.fft(t, norm="ortho"), x)
    assert r.flops == 2 * 120 + 2 * 16 == 272


def test_fft2_is_one_transform_of_the_product_of_the_sizes() -> None:
    # complex (3, 4, 8), fft2 over the last two dims: 3 transforms of N = 32: 5 * 32 * 5 = 800 each: 2,400 (the sum
    # of the 1-d transforms: 4 rows of 8 (5*8*3 = 120) and 8 columns of 4 (5*4*2 = 40): 480 + 320 = 800)
    x = torch.randn(3, 4, 8, dtype=torch.complex64)
    r = fn_both(lambda t: torch.fft.fft2(t), x)
    assert r.flops == 3 * 800 == 2_400
    assert 4 * transform_flops(8, 5.0) + 8 * transform_flops(4, 5.0) == 800


def test_irfft_scales_its_real_output() -> None:
    # complex (4, 5) -> irfft(n=8) real (4, 8): 4 transforms of N = 8, 2.5 * 8 * 3 = 60 each: 240; norm "backward"
    # divides the inverse by n: one per real output, 32; total 272
    x = torch.randn(4, 5, dtype=torch.complex64)
    r = fn_both(lambda t: torch.fft.irfft(t, n=8), x)
    assert _only(r, "aten::_fft_c2r") == 4 * 60 + 32 == 272


def test_two_sided_fft_of_a_real_input() -> None:
    # torch.fft.fft of a real (2, 8) runs r2c two-sided: 2 transforms of 8 at 2.5 * 8 * 3 = 60: 120; norm="forward"
    # scales the one-sided half the kernel computes, 2 * (8 // 2 + 1) = 10 reals a row: 20; total 140 (the mirrored
    # half is filled by conjugate symmetry: free)
    r = fn_both(lambda t: torch.fft.fft(t, norm="forward"), torch.randn(2, 8))
    assert r.flops == 120 + 20 == 140


def test_a_prime_length_is_priced_at_the_nominal_count_rounded() -> None:
    # N = 7: 5 * 7 * log2(7) = 98.26... -> 98 per transform, 3 transforms: 294
    x = torch.randn(3, 7, dtype=torch.complex64)
    r = fn_both(lambda t: torch.fft.fft(t), x)
    assert r.flops == 3 * 98 == 294


def test_stft_with_a_hann_window() -> None:
    # signal of 64, n_fft 16, hop 4, centred: reflect-padded by 8 on each side to 80 samples, 1 + (80 - 16) / 4 = 17
    # frames; the window times each frame: 17 * 16 = 272 multiplies; 17 real transforms of N = 16: 2.5 * 16 * 4 =
    # 160 each, 2,720. The window: periodic hann_window(16) computes 17 elements at 4 each: 68
    def spectrum(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, 16, hop_length=4, window=torch.hann_window(16, device=x.device), return_complex=True)

    r = fn_both(spectrum, torch.randn(64))
    assert _only(r, "aten::_fft_r2c") == 17 * 160 == 2_720
    assert _only(r, "aten::hann_window") == 17 * 4 == 68
    assert _only(r, "aten::mul") == 17 * 16 == 272
    assert r.uncounted == ()


@pytest.mark.parametrize(("make", "flops"), [
    (lambda d: torch.hann_window(10, device=d), 11 * 4),  # periodic: 11 computed elements, 4 each
    (lambda d: torch.hann_window(10, periodic=False, device=d), 10 * 4),
    (lambda d: torch.hamming_window(10, periodic=True, alpha=0.5, beta=0.4, device=d), 11 * 4),
    (lambda d: torch.blackman_window(10, device=d), 11 * 9),  # 99
    (lambda d: torch.bartlett_window(10, device=d), 11 + 2 * 5),  # L = 11, first half (11 - 1 >> 1) + 1 = 6: 21
    (lambda d: torch.bartlett_window(10, periodic=False, device=d), 10 + 2 * 5),  # L = 10, first half 5: 20
    (lambda d: torch.hann_window(1, device=d), 0),  # ones
    (lambda d: torch.kaiser_window(8, device=d), 9 * 10),  # periodic: 9 computed, 10 each (2 i0 evaluations)
    (lambda d: torch.kaiser_window(8, periodic=False, beta=5.0, device=d), 8 * 10),  # 80
])
def test_windows(make: object, flops: int) -> None:
    r = fn_both(lambda x: make(x.device) + x, torch.zeros(1))  # type: ignore[operator]
    window_ops = [o for o in r.ops if o.op.endswith("_window")]
    assert sum(o.flops for o in window_ops) == flops


class _SpectralMix(nn.Module):
    """An FNet-style mixing layer: the real part of a 2-d FFT over sequence and hidden dims."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fftn(x, dim=(-2, -1)).real


def test_fnet_mixing_in_a_training_step_prices_the_backward_transforms_too() -> None:
    import torchcost

    x = torch.randn(2, 8, 4, requires_grad=False)
    model = nn.Sequential(nn.Linear(4, 4), _SpectralMix())
    r = torchcost.analyze(model, x, mode="train")
    assert r.uncounted == ()
    for phase in r.phases:
        assert phase.uncounted == ()
    # forward: fftn of the (2, 8, 4) activations, which need a gradient, runs as a complex transform (torch makes
    # the input complex first): 2 transforms of N = 32 at 5 * 32 * 5 = 800: 1,600; the backward's transform is the
    # inverse of the same size, unscaled as the forward was: 1,600 again
    phases = {p.name: {o.op: o.flops for o in p.ops} for p in r.phases}
    assert phases["forward"]["aten::_fft_c2c"] == 2 * 800 == 1_600
    assert phases["backward"]["aten::_fft_c2c"] == 1_600
