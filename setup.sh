#!/usr/bin/env bash
# Set-up for a fresh machine: a virtual environment at .venv/ with the package, the pipeline
# tools (Snakemake, its SLURM executor, DVC) and the test tools. constraints.txt pins
# torch 2.14.1 / torchvision 0.29.1 for the machines this project is tested on; on a cluster,
# install the torch build that matches your CUDA driver first and drop `-c constraints.txt`.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -c constraints.txt -e '.[pipeline,test]'
.venv/bin/pip check
echo "set-up done: .venv/ ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
