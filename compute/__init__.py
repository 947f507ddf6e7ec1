"""Torch computations run by tracker workers."""
