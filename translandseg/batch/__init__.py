"""Batch prediction on a Dask cluster: many scenes, or one large mosaic, across workers."""
