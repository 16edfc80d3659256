"""Experiments that reproduce the paper's findings in miniature on Shapes World
(`python -m ldm_core.experiments --help`)."""
