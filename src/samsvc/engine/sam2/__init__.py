"""The SAM 2 family (sam2, Meta's SAM 2.1 image models). Only this package imports sam2."""
