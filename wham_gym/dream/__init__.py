"""The dream tool: K rollouts from one prompt under an action source, written to disk.

``dream`` (run.py) dreams, ``export_dream`` (export.py) writes frames, videos,
actions and a summary; ``actions.py`` reads action sources (files, policies).
"""

from .run import Dream, dream, load_prompt
from .export import export_dream

__all__ = ["Dream", "dream", "export_dream", "load_prompt"]
