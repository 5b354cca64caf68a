"""kexue: techniques from Su Jianlin's Scientific Spaces (kexue.fm) as tested PyTorch code."""

__version__ = "0.1.0"

from kexue.errors import KexueError

__all__ = ["KexueError", "__version__"]
