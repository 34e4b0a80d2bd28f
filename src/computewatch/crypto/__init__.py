"""computewatch.crypto"""
