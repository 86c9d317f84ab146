"""Training data: the RGB-D dataset format (read and write), cameras and view planning, and the
built-in synthetic scene. Numpy only (plus Pillow and OpenEXR for the image files)."""
