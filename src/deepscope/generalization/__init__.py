"""deepscope.generalization"""
