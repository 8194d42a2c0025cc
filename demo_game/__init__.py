"""The netcode demo game: a pygame arena."""
