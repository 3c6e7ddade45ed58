"""What a config implies, from its tensor plan: parameters, bytes, KV cache, FLOPs, attention cost,
and what DeepSeek Sparse Attention adds.
"""
