"""`ramcli eval`: mAP, CP and CR of a model on a benchmark laid out as the authors' ``datasets/<name>/``.

dataset.py reads the authors' files, metrics.py holds their definitions (AP, P/R), scores.py runs the
model over the images through the pipeline's prepare stage and the engine (scores cached), report.py
writes their files (ap.txt, pr.txt, summary.txt, pred.txt) and the JSON, plot.py the PNG.
"""
