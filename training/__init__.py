"""FLIP training layer: argument dataclasses, a small Trainer subclass, CTR metrics, thin scripts and Hub helpers."""
