"""The compiled core: the same names as core_ext.reference, from the Cython modules."""
from core_ext._build_info import build_info
from core_ext._ledger import Ledger
from core_ext._pipeline import Pipeline
from core_ext._rules import RuleEngine
from core_ext._qr import parse_qr, validate_qr

__all__ = ["parse_qr", "validate_qr", "RuleEngine", "build_info", "Ledger", "Pipeline"]
