"""deepscope.realization"""
