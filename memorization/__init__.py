"""memorization: corrupt a dataset, train a network, watch how it memorizes the noise.

Layer: the package root; it imports nothing of its own (docs/architecture.md has the layers).
"""

__version__ = "0.1.0"
