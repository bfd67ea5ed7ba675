"""The model side: loading and architecture adapters, head taps, the tensor kernels, one unit's computation."""
