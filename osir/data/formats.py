"""The image file extensions osir reads and writes, importable without the codec's libraries (torch, OpenCV):
commands check their input paths before loading anything heavy."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
