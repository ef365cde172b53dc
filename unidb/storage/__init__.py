"""The storage layer: the only code in unidb that touches files."""
