"""Judging a checkpoint once: the tensor plan from the family's rows, the header scan, the plan
checks, the findings, the policy, and the readers.
"""
