"""neuroplastic: local, self-supervised plasticity rules in rate and spiking networks.

See README.md for a tour; the science is in the docstrings of :mod:`neuroplastic.rules`.
"""
__version__ = "0.1.0"
