"""The pure-Python reference twin of the compiled core.

Same functions, same results, written to be read: when the two disagree, the
reading of this twin against the spec decides which one has the bug.
"""
from core_ext.reference.build_info import build_info
from core_ext.reference.ledger import Ledger
from core_ext.reference.pipeline import Pipeline
from core_ext.reference.rules import RuleEngine
from core_ext.reference.qr import parse_qr, validate_qr

__all__ = ["parse_qr", "validate_qr", "RuleEngine", "build_info", "Ledger", "Pipeline"]
