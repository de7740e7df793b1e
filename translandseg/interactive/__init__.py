"""Interactive correction: SAM clicks on an image, their simulation, training and evaluation."""
