"""AMD Quark: real_quantize_mxfp does not clamp the shared exponent to the E8M0 range, so a block
with amax below 2^(emax - 127) gets a scale below 2^-127 (no E8M0 code exists for it).

amax = 2^-140 (MXFP4 E2M1, emax 2): OCP MX v1.0 clamps X = -140 - 2 = -142 to -127 (code 0).
Quark returns the scale printed below (the first value of the block's 33: scale, then 32 elements).
"""
import torch
from quark.torch.kernel.hw_emulation.hw_emulation_interface import real_quantize_mxfp

x = torch.zeros(1, 32)
x[0, 0] = 2.0**-140
out = real_quantize_mxfp(x, "fp4", -1, 32)
print(f"scale {out[0, 0].item()!r} (OCP MX v1.0: clamped to 2^-127 = {2.0**-127!r})")
