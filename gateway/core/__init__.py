"""Pure gateway logic: no Azure imports, no I/O beyond what callers inject."""
