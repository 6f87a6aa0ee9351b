"""Workflows: the only library code that chains stages (above training and inference).

- :func:`medseg.workflows.train.train_and_decide`: train fold(s), then decide each fold's
  post-processing on its validation predictions.
- :func:`medseg.workflows.postprocess_decision.decide_run_postprocessing`: the decision itself.
- :func:`medseg.workflows.evaluate.evaluate_folder`: pair a folder of predictions with their
  references, score every case, write the summary files and the report (``medseg evaluate``).
"""
