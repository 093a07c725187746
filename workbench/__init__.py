"""Headshot privacy workbench: how much privacy does an AI-headshot recipe cost?"""

__version__ = "0.1.0"
