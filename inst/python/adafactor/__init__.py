"""adafactor: a memory-true Keras 3 Adafactor, one factory for R and Python."""

from adafactor._arguments import ArgumentError, accepted, error_message
from adafactor._compiled_report import CompiledReport
from adafactor.factory import optimizer_adafactor
from adafactor.memory import MemoryReport, memory_report
from adafactor.optimizer import Adafactor

__version__ = "0.6.1"
__all__ = [
    "Adafactor",
    "ArgumentError",
    "CompiledReport",
    "MemoryReport",
    "accepted",
    "error_message",
    "memory_report",
    "optimizer_adafactor",
]
