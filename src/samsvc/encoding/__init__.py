"""Mask encodings (PNG, COCO RLE, polygons) and the overlay visualization, shared by the
server and the workers."""
