"""computewatch.analysis"""
