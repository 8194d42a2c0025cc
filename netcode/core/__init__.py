"""netcode.core"""
