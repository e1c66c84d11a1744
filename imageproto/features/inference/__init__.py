"""features/inference"""
