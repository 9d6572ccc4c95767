"""numba kernels: synthetic/occluded/masked batches written straight into the model's native
input layout and dtype with preprocessing fused, and map painting.

Kernels are pure (arrays in, preallocated arrays out, no I/O, no global RNG). Each has a
plain-numpy reference in the same module; tests compare them exactly.
"""
