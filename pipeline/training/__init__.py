"""Training SNMN: the loop, its checkpoints, and the run it belongs to.

loop.py trains (expert layouts or not, VQA, CLEVR-Ref or joint); checkpoint.py saves and resumes
it exactly; launch.py names the run, checks the inputs, opens its MLflow run and hands the loop
to Ray Train through pipeline/distributed.py, the only module that knows about Ray.
"""
