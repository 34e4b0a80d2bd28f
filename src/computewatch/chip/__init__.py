"""computewatch.chip"""
