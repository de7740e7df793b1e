"""Training the automatic mask: the trainer (``trainer``), its losses (``losses``), and
retraining from the label store in a process of its own (``retraining``)."""
