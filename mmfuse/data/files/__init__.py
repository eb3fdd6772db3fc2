"""Readers of file formats: tables (CSV/TSV/Parquet, data set directories), FASTA, GTF/GFF3, GCT, BED, VCF, h5ad."""
