"""CLEVR itself: the function catalogue, the file readers, the world and its renderer, the executor.

"What color is the large cube?" arrives as a CLEVR v1.0 question with the program
filter_size → filter_shape → unique → query_color; functions.py is the catalogue of those
functions (inputs, value input, question type), readers.py reads the question (and scenes,
CLEVR-Ref boxes) as typed records, executor.py runs such a program on a scene, world.py holds
CLEVR's camera, sizes and colours, and render.py draws a scene: the pictures of mini-CLEVR and,
for any CLEVR scene, the map of which object covers which pixel.
"""
