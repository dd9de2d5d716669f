"""rest: Reinforced Self-Training (ReST) for conditional language models, as JSONL command-line tools."""

__version__ = "0.1.0"
