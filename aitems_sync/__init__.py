"""aitems-sync: keep NAVER Cloud AiTEMS datasets fed from SQL databases, incrementally."""

__version__ = "0.1.0"
