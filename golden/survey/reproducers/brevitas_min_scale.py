"""Brevitas: an MX block with a tiny amax gets a scale clamped at about 3.9e-13, which is not a
power of two, so it is no E8M0 scale, and the block's values are flushed to zero.

amax = 2^-60 (MXFP8 E4M3, emax 8): OCP MX v1.0 gives X = -60 - 8 = -68, scale 2^-68, and the
element 2^-60 / 2^-68 = 256 is exact.  Brevitas returns the scale and value printed below.
"""
import torch
import brevitas.nn as qnn
from brevitas.quant.mx_quant_ocp import MXFloat8e4m3Act

x = torch.full((1, 32), 2.0**-62)
x[0, 0] = 2.0**-60
q = qnn.QuantIdentity(act_quant=MXFloat8e4m3Act.let(group_dim=-1), return_quant_tensor=True)
q.eval()
with torch.no_grad():
    y = q(x)
print(f"scale {y.scale.flatten()[0].item()!r} (OCP MX v1.0: {2.0**-68!r}), value {y.value[0, 0].item()!r} "
      f"(input {2.0**-60!r})")
