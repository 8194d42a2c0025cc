"""``python -m demo_game``: the same as ``netcode-demo``."""

from demo_game.main import main

raise SystemExit(main())
