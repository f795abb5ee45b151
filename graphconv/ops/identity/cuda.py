"""CUDA identity: the input device array itself; kernels never write into their inputs."""
from __future__ import annotations


def run_identity(params: dict, weights: dict, inputs: list):
    return inputs[0]
