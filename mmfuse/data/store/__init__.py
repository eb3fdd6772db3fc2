"""The memory-mapped records store and its readers (rows, lazy sequences, validation against tokenizers)."""
