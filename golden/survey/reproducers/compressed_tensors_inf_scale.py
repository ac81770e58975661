"""compressed-tensors: the MX scale of a float16 group is computed in float16, so it overflows to
Inf once 2^X exceeds float16's range (and a float32/float64 group whose amax is huge gets an
unclamped exponent).

A float16 group with amax 60000 (MXFP4 E2M1, emax 2): X = floor(log2(60000)) - 2 = 13 under the
floor rule, 2^13 = 8192 is a float16 value and the block is well defined; the E8M0 code is 140.
compressed-tensors' calculate_qparams returns the scale below; it should be a finite power of two.
A float32 group with amax 3e38 shows the unclamped exponent: the scale must be at most 2^127.
"""
import torch
from compressed_tensors.quantization.quant_scheme import MXFP4A16
from compressed_tensors.quantization.utils import calculate_qparams

args = MXFP4A16["weights"]
for dtype, amax in ((torch.float16, 60000.0), (torch.float32, 3e38)):
    group = torch.full((1, 1, 32), amax / 4, dtype=dtype)
    group[0, 0, 0] = amax
    scale, _ = calculate_qparams(group.amin(-1), group.amax(-1), args)
    print(f"{dtype}: amax {amax:g} -> scale {scale.flatten()[0].item()!r} (expected a finite power of two <= 2^127)")
