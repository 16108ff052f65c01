"""The Python side of the payment switch: server, client, CLI, config, load generator.

The hot path (decoding, QR validation, rules, ledger posting) lives in
core_ext/; this package wires it to the network, the disk and the operator.
"""
__version__ = "0.1.0"
