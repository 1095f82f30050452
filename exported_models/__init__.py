"""Data package: the shipped default model (named in DEFAULT) and its model card."""
