"""Reading config.json: the pydantic models, which layout and loader a file is, the loaders'
defaults, and resolving what a user typed to a config.
"""
