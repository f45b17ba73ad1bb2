"""The results layer (torch-free): protocols, latest records, intervals, paired comparisons, headlines."""
