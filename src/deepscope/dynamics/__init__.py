"""deepscope.dynamics"""
