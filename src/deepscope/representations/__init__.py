"""deepscope.representations"""
