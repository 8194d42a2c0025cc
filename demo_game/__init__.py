"""The netcode demo game: a pygame arena."""

import os

# pygame's greeting would land in the middle of the demo's own output.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
