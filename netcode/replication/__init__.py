"""netcode.replication"""
