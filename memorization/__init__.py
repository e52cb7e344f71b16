"""memorization: corrupt a dataset, train a network, watch how it memorizes the noise."""

__version__ = "0.1.0"
