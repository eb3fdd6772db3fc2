"""Genomics: DNA windows cut from a genome, region overlaps, the isoform-table builder, variant effects, tissues."""
