"""DeepSeek-V4: its own config, tensor plan, formats and commands."""
