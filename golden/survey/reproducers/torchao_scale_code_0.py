"""torchao: an MXFP8 E4M3 block whose shared scale is 2^-127 (E8M0 code 0) is quantised at 2^-126.

OCP MX v1.0: X = floor(log2(amax)) - emax = -130 - 8, clamped to the E8M0 minimum -127, so the
element of 2^-130 is 2^-130 / 2^-127 = 2^-3 (E4M3 code 0x20).  torchao's to_mx returns scale
code 0 (2^-127) but divides by 2^-126 (a clamp that avoids a float32 subnormal), giving 2^-4
(0x18): the dequantised value is half the input.  Expected output: "scale code 0, element 0x20".
"""
import torch
from torchao.prototype.mx_formats.config import ScaleCalculationMode
from torchao.prototype.mx_formats.mx_tensor import to_mx

x = torch.zeros(1, 32)
x[0, 0] = 2.0**-130
scale, data = to_mx(x, torch.float8_e4m3fn, 32, ScaleCalculationMode.FLOOR)
print(f"scale code {int(scale.view(torch.uint8)[0, 0])}, element 0x{int(data.view(torch.uint8)[0, 0]):02x}"
      " (OCP MX v1.0: scale code 0, element 0x20)")
