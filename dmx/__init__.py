"""dMX: differentiable per-layer MX mixed-precision assignment."""
