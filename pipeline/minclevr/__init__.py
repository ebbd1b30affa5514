"""Mini-CLEVR: an offline, deterministic CLEVR / CLEVR-Ref generator in pure Python.

"How many spheres are left of the large cube?" needs a picture, a scene graph, a program and an
answer. world.py fixes the vocabulary and camera, scenes.py places objects by CLEVR's rules,
render.py draws them (and the object-ID buffer), questions.py / refexps.py / families.py write
questions and referring expressions, executor.py answers programs, generate.py writes it all.
"""
