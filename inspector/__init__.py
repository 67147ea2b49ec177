"""inspector: visual inspection of manufactured parts by k-means colour segmentation and a normal profile."""

__version__ = "0.1.0"
