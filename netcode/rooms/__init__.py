"""netcode.rooms"""
