"""Hydra configs (package data: found by ``pkg://fgq.conf`` from any install)."""
