"""Task files in, validated task batches out."""
