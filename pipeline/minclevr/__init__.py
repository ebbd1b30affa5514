"""Mini-CLEVR: an offline, deterministic CLEVR / CLEVR-Ref generator in pure Python.

"How many spheres are left of the large cube?" needs a picture, a scene graph, a program and an
answer. scenes.py places objects by CLEVR's rules (in the world of pipeline/clevr/world.py, drawn
by pipeline/clevr/render.py), questions.py / refexps.py / families.py write questions and
referring expressions answered by pipeline/clevr/executor.py, and generate.py writes it all.
"""
