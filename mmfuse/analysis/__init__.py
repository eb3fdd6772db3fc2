"""Analyses of a trained (or pretrained) FusionModel: embed, explain, score-variants, modality contribution."""
