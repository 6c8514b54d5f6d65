"""Differentiable twin of live/audio/synth.py's DSP, and the multi-scale spectral loss it is trained with.

The decoder is only ever heard through the synth, so training renders its outputs exactly the way the synth
does: harmonic amplitudes ramped linearly across each block from the previous block's values, harmonics at or
above Nyquist dropped (not renormalised), f0 held per block with continuous phase, and noise made per block from
random-phase spectra shaped by the 65 linearly spaced bands, inverse-FFT'd into two-block sine-windowed frames
and overlap-added. Gradients flow into the amplitudes and band gains; f0 is given, so the sines need none.
"""

from __future__ import annotations

import math

import torch

from live.audio.synth import HARMONICS, NOISE_BANDS


def harmonic(f0: torch.Tensor, amplitudes: torch.Tensor, rate: int, block: int) -> torch.Tensor:
    """[B, T+1] f0 and [B, T+1, HARMONICS] amplitudes -> [B, T*block] audio for frames 1..T.

    Frame 0 only supplies the amplitudes block 1 ramps from (zeros at a note start), as the synth's `_amp` does.
    """
    batch, frames = f0.shape[0], f0.shape[1] - 1
    k = torch.arange(1, HARMONICS + 1, dtype=torch.float32)
    with torch.no_grad():
        step = (2.0 * math.pi / rate) * f0[:, 1:].double()
        phase = torch.remainder(torch.cumsum(step.repeat_interleave(block, dim=1), dim=1), 2.0 * math.pi)
        waves = torch.sin(phase.float().view(batch, frames, block, 1) * k)  # [B, T, block, K]
    below = (f0[..., None] * k < rate / 2).float()  # per frame here; per note in the synth (f0 is fixed there)
    amps = amplitudes * below
    old = torch.matmul(waves, amps[:, :-1, :, None]).squeeze(-1)  # [B, T, block]
    new = torch.matmul(waves, amps[:, 1:, :, None]).squeeze(-1)
    ramp = torch.arange(1, block + 1, dtype=torch.float32) / block
    return (old + (new - old) * ramp).reshape(batch, frames * block)


def noise(gains: torch.Tensor, block: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, T+1, NOISE_BANDS] band gains -> [B, T*block] filtered noise for frames 1..T (frame 0's tail leads in)."""
    batch, frames = gains.shape[0], gains.shape[1] - 1
    frame = 2 * block
    bins = block + 1
    position = torch.linspace(0.0, NOISE_BANDS - 1, bins, dtype=torch.float64)
    lo = torch.clamp(position.long(), max=NOISE_BANDS - 2)
    frac = (position - lo).float()
    shaped = gains[..., lo] * (1 - frac) + gains[..., lo + 1] * frac  # [B, T+1, bins]
    real = torch.randn(shaped.shape, generator=generator)
    imag = torch.randn(shaped.shape, generator=generator)
    spectrum = torch.complex(real * shaped, imag * shaped) * math.sqrt(frame / 2.0)
    window = torch.sin(math.pi * (torch.arange(frame, dtype=torch.float32) + 0.5) / frame)
    grains = torch.fft.irfft(spectrum, n=frame) * window  # [B, T+1, 2*block]
    out = grains[:, 1:, :block] + grains[:, :-1, block:]
    return out.reshape(batch, frames * block)


def spectral_loss(pred: torch.Tensor, target: torch.Tensor,
                  sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)) -> torch.Tensor:
    """Multi-scale spectral loss: per FFT size, L1 of magnitudes (relative to the target's mean) plus L1 of logs.

    The relative linear term weighs the loud partials at every scale alike; the log term hears quiet detail
    (noise floors, high harmonics, decays). Short sizes judge timing, long ones pitch and partial levels.
    """
    total = pred.new_zeros(())
    for size in sizes:
        window = torch.hann_window(size)

        def magnitude(x: torch.Tensor) -> torch.Tensor:
            return torch.stft(x, size, hop_length=size // 4, window=window, return_complex=True).abs()

        p, t = magnitude(pred), magnitude(target)
        linear = (p - t).abs().mean() / (t.mean() + 1e-7)
        total = total + linear + (torch.log(p + 1e-4) - torch.log(t + 1e-4)).abs().mean()
    return total / len(sizes)
