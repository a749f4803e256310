"""vlmtune: fine-tune vision-language models on your task and measure, with numbers you can trust, whether it worked."""

__version__ = "0.1.0"
