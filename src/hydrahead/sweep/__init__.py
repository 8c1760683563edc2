"""Hydra launchers for sweeps of many short jobs: compose once per set of group choices, run in chunks."""
