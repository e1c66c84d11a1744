"""features/web"""
