"""gfloat: compute_scale_amax takes floor(log2(amax)) in float64, which rounds up to an integer for
amax one ulp below a power of two, so the scale is one binade too high.

amax = 2^21 - 2^-31 (the float64 just below 2^21), MXFP8 E4M3 (emax 8): OCP MX v1.0 gives
X = floor(log2(amax)) - 8 = 20 - 8 = 12; gfloat returns 2^13.
"""
import numpy as np
from gfloat import compute_scale_amax
from gfloat.formats import format_info_mxfp8_e4m3

amax = np.nextafter(2.0**21, 0.0)
block = np.array([amax] + [1.0] * 31)
print(f"scale {compute_scale_amax(format_info_mxfp8_e4m3.etype.emax, block)!r} (OCP MX v1.0: {2.0**12!r})")
