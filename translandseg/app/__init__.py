"""The web app: the Gradio UI (``webapp``) and its labeling canvas (``canvas``)."""
