"""memorization: corrupt a dataset, train a network, watch how it memorizes the noise.

Layer: the package root; its modules are the ``python -m memorization.<command>`` commands,
each handing over to cli/ (docs/architecture.md has the layers).
"""

__version__ = "0.1.0"
