"""One file per data module: isoform expression, sequence classification, single cells, TF binding."""
