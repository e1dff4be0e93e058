"""Datasets: the clip/batch contract (:mod:`fgq.data.batch`) and the procedural scenes (:mod:`fgq.data.synthetic`)."""
