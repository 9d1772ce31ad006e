"""Workflows: the commands' work as library calls, composed from the pure libraries below.

Each module is one workflow (load a run, generate, make fakes, train the critic, evaluate). The
libraries (`sample`, `critic`, `eval`, `train`, ...) never import this package, so they stay free of
each other's workflows; the CLI and notebooks call these functions.
"""
