"""Training the automatic mask: the trainer (``trainer``), its losses (``losses``), retraining
from the label store in a process of its own (``retraining``), and the recipe behind the offline
default adapter (``recipe``)."""
