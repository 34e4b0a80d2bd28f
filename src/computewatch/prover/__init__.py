"""computewatch.prover"""
