"""netcode.transport"""
